module example.com/mixed

go 1.22.3

toolchain go1.22.5
