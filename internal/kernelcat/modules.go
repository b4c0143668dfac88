package kernelcat

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// maxModule caps one decompressed .ko.
const maxModule = 64 << 20

// moduleInfo is what depmod reads from a module's .modinfo section.
type moduleInfo struct {
	path    string // relative to the modules dir
	name    string
	depends []string
	aliases []string
}

// writeModuleIndex writes modules.dep and modules.alias for the modules
// tree at dir, as depmod would (Debian's packages leave them to depmod in
// postinst, and the guest's /init needs them to load modules in order).
// Existing files are left alone.
func writeModuleIndex(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "modules.dep")); err == nil {
		return nil
	}
	var mods []moduleInfo
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 || d.IsDir() || !isModuleFile(p) {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		mi, err := readModInfo(p)
		if err != nil {
			return fmt.Errorf("read modinfo of %s: %w", rel, err)
		}
		mi.path = filepath.ToSlash(rel)
		mods = append(mods, mi)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].path < mods[j].path })
	byName := map[string]*moduleInfo{}
	for i := range mods {
		byName[mods[i].name] = &mods[i]
	}
	var dep, alias bytes.Buffer
	for _, m := range mods {
		// Post-order DFS puts the deepest dependencies first; modules.dep
		// lists them last, since modprobe loads the list from its end.
		var order []string
		seen := map[string]bool{m.name: true}
		var visit func(name string)
		visit = func(name string) {
			dm, ok := byName[name]
			if !ok || seen[name] {
				return
			}
			seen[name] = true
			for _, d := range dm.depends {
				visit(d)
			}
			order = append(order, dm.path)
		}
		for _, d := range m.depends {
			visit(d)
		}
		fmt.Fprintf(&dep, "%s:", m.path)
		for i := len(order) - 1; i >= 0; i-- {
			fmt.Fprintf(&dep, " %s", order[i])
		}
		dep.WriteByte('\n')
		for _, a := range m.aliases {
			fmt.Fprintf(&alias, "alias %s %s\n", a, m.name)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), dep.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "modules.alias"), alias.Bytes(), 0o644)
}

func isModuleFile(p string) bool {
	return strings.HasSuffix(p, ".ko") || strings.HasSuffix(p, ".ko.xz") || strings.HasSuffix(p, ".ko.zst")
}

func readModInfo(p string) (moduleInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return moduleInfo{}, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(p, ".xz"):
		if r, err = xz.NewReader(f); err != nil {
			return moduleInfo{}, err
		}
	case strings.HasSuffix(p, ".zst"):
		z, err := zstd.NewReader(f)
		if err != nil {
			return moduleInfo{}, err
		}
		defer z.Close()
		r = z
	}
	data, err := io.ReadAll(io.LimitReader(r, maxModule+1))
	if err != nil {
		return moduleInfo{}, err
	}
	if len(data) > maxModule {
		return moduleInfo{}, fmt.Errorf("module larger than %d bytes", maxModule)
	}
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return moduleInfo{}, err
	}
	defer ef.Close()
	sec := ef.Section(".modinfo")
	if sec == nil {
		return moduleInfo{}, fmt.Errorf("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return moduleInfo{}, err
	}
	base := filepath.Base(p)
	mi := moduleInfo{name: strings.ReplaceAll(base[:strings.Index(base, ".ko")], "-", "_")}
	for _, kv := range bytes.Split(info, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			mi.name = v
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					mi.depends = append(mi.depends, d)
				}
			}
		case "alias":
			mi.aliases = append(mi.aliases, v)
		}
	}
	return mi, nil
}
