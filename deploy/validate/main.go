// Command validate checks Kubernetes manifests against Kubernetes' own Go API types, the way the API
// server's strict field validation would, without a cluster:
//
//	go -C deploy/validate run . ../k8s          # every *.yaml / *.yml under the folder
//	validate deploy/k8s/serving/deployment.yaml  # or single files
//
// Each YAML document is converted to JSON by sigs.k8s.io/yaml's YAMLToJSONStrict (duplicate keys fail, as
// they do in kubectl), then decoded by sigs.k8s.io/json's UnmarshalStrict, the case-sensitive decoder
// that kube-apiserver uses, into the Go type registered for its apiVersion and kind (kinds.go), with
// unknown and duplicate fields rejected. A misspelt field, a string where an int belongs, or a kind this
// project does not ship therefore fails here instead of at `kubectl apply` time, or worse, silently (a
// client-side apply without strict validation drops unknown fields). On top of the types, a few explicit
// checks (checks.go) cover what the types cannot say: required fields and the API server's and operators'
// cross-field rules that a manifest in this repository could plausibly break.
//
// Every problem is printed as `FILE:LINE: document N (Kind "name"): FIELD: message`, where LINE is the
// document's first line, and the exit code is 1 if there was any (2 for a usage error).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// document is one YAML document of a manifest file.
type document struct {
	file  string
	index int // 1-based, counting only documents with content
	line  int // 1-based line of the document's first line in the file
	body  []byte
}

// header is what every manifest starts with; decoded leniently first, to choose the strict type.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name         string `json:"name"`
		GenerateName string `json:"generateName"`
	} `json:"metadata"`
}

// problem is one finding about a document.
type problem struct {
	doc     *document
	hdr     header
	message string
}

func (p problem) String() string {
	what := p.hdr.Kind
	if what == "" {
		what = "no kind"
	}
	if p.hdr.Metadata.Name != "" {
		what += fmt.Sprintf(" %q", p.hdr.Metadata.Name)
	}
	return fmt.Sprintf("%s:%d: document %d (%s): %s", p.doc.file, p.doc.line, p.doc.index, what, p.message)
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: validate PATH...  (folders are searched for *.yaml and *.yml)")
		os.Exit(2)
	}
	files, err := manifestFiles(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "validate:", err)
		os.Exit(2)
	}
	var problems []problem
	documents := 0
	for _, file := range files {
		docs, err := readDocuments(file)
		if err != nil {
			fmt.Fprintln(os.Stderr, "validate:", err)
			os.Exit(2)
		}
		if len(docs) == 0 {
			problems = append(problems, problem{doc: &document{file: file, line: 1}, message: "no YAML document"})
		}
		for _, doc := range docs {
			found, hdr := validateDocument(doc)
			problems = append(problems, found...)
			if len(found) == 0 {
				name := ""
				if hdr.Metadata.Name != "" {
					name = fmt.Sprintf(" %q", hdr.Metadata.Name)
				}
				fmt.Printf("ok    %s:%d %s %s%s\n", doc.file, doc.line, hdr.APIVersion, hdr.Kind, name)
			}
			documents++
		}
	}
	for _, p := range problems {
		fmt.Println("FAIL  " + p.String())
	}
	fmt.Printf("%d document(s) in %d file(s), %d problem(s)\n", documents, len(files), len(problems))
	if len(problems) > 0 {
		os.Exit(1)
	}
}

// manifestFiles expands the arguments: files as given, folders to their *.yaml and *.yml files in lexical
// order. A folder without manifests is an error, so a wrong path cannot pass by validating nothing.
func manifestFiles(args []string) ([]string, error) {
	var files []string
	for _, arg := range args {
		info, err := os.Stat(arg)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			files = append(files, arg)
			continue
		}
		before := len(files)
		err = filepath.WalkDir(arg, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && isYAML(path) {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(files) == before {
			return nil, fmt.Errorf("%s: no *.yaml or *.yml files", arg)
		}
	}
	return files, nil
}

func isYAML(path string) bool {
	ext := filepath.Ext(path)
	return ext == ".yaml" || ext == ".yml"
}

// readDocuments splits a file at `---` lines, keeping each document's first line for messages. Documents
// with nothing but comments and blank lines are dropped (kubectl ignores them too).
func readDocuments(file string) ([]*document, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var docs []*document
	lines := strings.SplitAfter(string(data), "\n")
	start, content := 0, false
	flush := func(end int) {
		if content {
			body := strings.Join(lines[start:end], "")
			docs = append(docs, &document{file: file, index: len(docs) + 1, line: start + 1, body: []byte(body)})
		}
	}
	for i, line := range lines {
		trimmed := strings.TrimRight(line, "\r\n")
		if trimmed == "---" || strings.HasPrefix(trimmed, "--- ") || strings.HasPrefix(trimmed, "---\t") {
			flush(i)
			start, content = i+1, false
			continue
		}
		if t := strings.TrimSpace(trimmed); t != "" && !strings.HasPrefix(t, "#") {
			content = true
		}
	}
	flush(len(lines))
	return docs, nil
}

// yamlLine matches the line numbers in YAML parser messages, which count from the document's start.
var yamlLine = regexp.MustCompile(`line (\d+)`)

// validateDocument decodes one document strictly into its registered type and runs that kind's checks.
func validateDocument(doc *document) ([]problem, header) {
	var hdr header
	fail := func(format string, args ...any) []problem {
		return []problem{{doc: doc, hdr: hdr, message: fmt.Sprintf(format, args...)}}
	}
	data, err := yaml.YAMLToJSONStrict(doc.body)
	if err != nil {
		// Named by kind and name all the same when the lenient conversion gets that far (duplicate keys).
		if lenient, lerr := yaml.YAMLToJSON(doc.body); lerr == nil {
			_ = json.Unmarshal(lenient, &hdr)
		}
		// One line, with line numbers made absolute (the parser counts from the document's start).
		msg := strings.Join(strings.Fields(err.Error()), " ")
		msg = yamlLine.ReplaceAllStringFunc(msg, func(m string) string {
			n, _ := strconv.Atoi(m[len("line "):])
			return fmt.Sprintf("line %d", n+doc.line-1)
		})
		return fail("invalid YAML: %s", msg), hdr
	}
	if !bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		return fail("a manifest must be a mapping (apiVersion, kind, metadata, ...)"), hdr
	}
	// Lenient first pass: only to learn the type; the strict pass below reports wrong types here too.
	_ = json.Unmarshal(data, &hdr)
	if hdr.APIVersion == "" || hdr.Kind == "" {
		return fail("apiVersion and kind are required"), hdr
	}
	k, ok := kinds[hdr.APIVersion+" "+hdr.Kind]
	if !ok {
		return fail("kind: unknown kind %q in apiVersion %q (known: %s)", hdr.Kind, hdr.APIVersion,
			strings.Join(knownKinds(), ", ")), hdr
	}
	obj := k.new()
	strict, err := kjson.UnmarshalStrict(data, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	var problems []problem
	for _, e := range strict {
		problems = append(problems, problem{doc: doc, hdr: hdr, message: e.Error()})
	}
	if err != nil {
		// A wrong type leaves the object half decoded: checking it further would only add noise.
		return append(problems, problem{doc: doc, hdr: hdr, message: err.Error()}), hdr
	}
	c := &checker{file: doc.file}
	if k.named {
		c.objectName(hdr.Kind, hdr.Metadata.Name, hdr.Metadata.GenerateName)
	}
	k.check(c, obj)
	for _, msg := range c.problems {
		problems = append(problems, problem{doc: doc, hdr: hdr, message: msg})
	}
	return problems, hdr
}

func knownKinds() []string {
	names := make([]string, 0, len(kinds))
	for name := range kinds {
		names = append(names, strings.Replace(name, " ", "/", 1))
	}
	sort.Strings(names)
	return names
}
