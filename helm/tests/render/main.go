// A small Helm-compatible renderer for the chart's tests: Go text/template with the sprig
// functions plus Helm's include, tpl, toYaml, required and fail; values from values.yaml merged
// with -f files. It renders every template of a chart to multi-document YAML on stdout.
//
//	render [-f values.yaml ...] [-notes] CHART_DIR
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

func load(path string) map[string]interface{} {
	data, err := os.ReadFile(path)
	if err != nil {
		fail(err)
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		fail(fmt.Errorf("%s: %w", path, err))
	}
	return out
}

// merge overlays src onto dst recursively (maps merge, everything else replaces).
func merge(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "render:", err)
	os.Exit(1)
}

func main() {
	var extra files
	flag.Var(&extra, "f", "values file to merge (repeatable)")
	notes := flag.Bool("notes", false, "render NOTES.txt instead of the manifests")
	flag.Parse()
	if flag.NArg() != 1 {
		fail(fmt.Errorf("usage: render [-f values.yaml] CHART_DIR"))
	}
	dir := flag.Arg(0)
	chart := load(filepath.Join(dir, "Chart.yaml"))
	values := load(filepath.Join(dir, "values.yaml"))
	for _, f := range extra {
		values = merge(values, load(f))
	}
	data := map[string]interface{}{
		"Values":  values,
		"Release": map[string]interface{}{"Name": "test", "Namespace": "kafka", "Service": "Helm"},
		"Chart":   map[string]interface{}{"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
	}
	root := template.New("root")
	funcs := sprig.TxtFuncMap()
	funcs["include"] = func(name string, d interface{}) (string, error) {
		var b bytes.Buffer
		err := root.ExecuteTemplate(&b, name, d)
		return b.String(), err
	}
	funcs["tpl"] = func(text string, d interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		err = t.Execute(&b, d)
		return b.String(), err
	}
	funcs["toYaml"] = func(v interface{}) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(b), "\n")
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", fmt.Errorf("%s", msg) }
	root.Funcs(funcs).Option("missingkey=zero")
	paths, _ := filepath.Glob(filepath.Join(dir, "templates", "*"))
	sort.Strings(paths)
	for _, p := range paths {
		text, err := os.ReadFile(p)
		if err != nil {
			fail(err)
		}
		if _, err := root.New(filepath.Base(p)).Parse(string(text)); err != nil {
			fail(fmt.Errorf("%s: %w", p, err))
		}
	}
	for _, p := range paths {
		name := filepath.Base(p)
		isNotes := name == "NOTES.txt"
		if strings.HasPrefix(name, "_") || isNotes != *notes {
			continue
		}
		var b bytes.Buffer
		if err := root.ExecuteTemplate(&b, name, data); err != nil {
			fail(fmt.Errorf("%s: %w", name, err))
		}
		if strings.TrimSpace(b.String()) == "" {
			continue
		}
		if !*notes {
			fmt.Printf("---\n# Source: %s\n", name)
		}
		fmt.Println(strings.TrimRight(b.String(), "\n"))
	}
}
