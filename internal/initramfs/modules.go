package initramfs

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrModuleNotFound means a requested module is neither loadable nor built in.
var ErrModuleNotFound = errors.New("kernel module not found")

// moduleIndex knows where each loadable module of one kernel lives and what it
// depends on. It reads modules.dep when depmod has run; distribution packages
// ship without it (depmod runs in postinst), so it otherwise maps names from
// modules.order (or a walk of kernel/) and reads each needed module's
// "depends=" from its .modinfo ELF section.
type moduleIndex struct {
	dir     string
	paths   map[string]string   // module name → path relative to dir
	deps    map[string][]string // from modules.dep, keyed by name; nil without it
	builtin map[string]bool
}

// moduleName normalises "kernel/drivers/virtio/virtio_pci.ko" or "virtio-pci"
// to the kernel's module name "virtio_pci".
func moduleName(p string) string {
	base := filepath.Base(p)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(base, ext) {
			base = strings.TrimSuffix(base, ext)
			break
		}
	}
	return strings.ReplaceAll(base, "-", "_")
}

func loadModuleIndex(dir string) (*moduleIndex, error) {
	idx := &moduleIndex{dir: dir, paths: map[string]string{}, builtin: map[string]bool{}}
	if err := readLines(filepath.Join(dir, "modules.builtin"), func(line string) {
		idx.builtin[moduleName(line)] = true
	}); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	err := readLines(filepath.Join(dir, "modules.dep"), func(line string) {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			return
		}
		if idx.deps == nil {
			idx.deps = map[string][]string{}
		}
		name := moduleName(mod)
		idx.paths[name] = strings.TrimSpace(mod)
		for _, d := range strings.Fields(deps) {
			idx.deps[name] = append(idx.deps[name], moduleName(d))
		}
	})
	if err == nil {
		return idx, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	err = readLines(filepath.Join(dir, "modules.order"), func(line string) {
		idx.paths[moduleName(line)] = line
	})
	if err == nil {
		return idx, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read modules.order: %w", err)
	}
	err = filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.Contains(d.Name(), ".ko") {
			rel, _ := filepath.Rel(dir, p)
			idx.paths[moduleName(rel)] = rel
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list modules in %s: %w", dir, err)
	}
	return idx, nil
}

// dependencies returns a module's direct dependencies.
func (idx *moduleIndex) dependencies(name string) ([]string, error) {
	if idx.deps != nil {
		return idx.deps[name], nil
	}
	depends, err := modinfoDepends(filepath.Join(idx.dir, idx.paths[name]))
	if err != nil {
		return nil, err
	}
	return depends, nil
}

// resolve returns the loadable modules needed for names, dependencies before
// their users, each once, in a deterministic order (depth first, following the
// order of names). Built-in modules are skipped.
func (idx *moduleIndex) resolve(names []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = moduleName(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle through %s", name)
		case 2:
			return nil
		}
		if _, ok := idx.paths[name]; !ok {
			if idx.builtin[name] {
				state[name] = 2
				return nil
			}
			if from != "" {
				return fmt.Errorf("%w: %s (needed by %s) in %s", ErrModuleNotFound, name, from, idx.dir)
			}
			return fmt.Errorf("%w: %s in %s", ErrModuleNotFound, name, idx.dir)
		}
		state[name] = 1
		deps, err := idx.dependencies(name)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// modinfoDepends reads "depends=a,b" from a module's .modinfo section.
func modinfoDepends(path string) ([]string, error) {
	if !strings.HasSuffix(path, ".ko") {
		return nil, fmt.Errorf("module %s is compressed: only uncompressed .ko modules are supported", path)
	}
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("read module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read module %s .modinfo: %w", path, err)
	}
	for _, field := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(field, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, moduleName(d))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

func readLines(path string, fn func(line string)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			fn(line)
		}
	}
	return sc.Err()
}
