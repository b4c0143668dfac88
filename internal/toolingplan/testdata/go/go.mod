module example.com/app

go 1.19

require golang.org/x/sys v0.1.0
