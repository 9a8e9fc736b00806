package main

// The explicit checks: what the Go types cannot express. Each is either a rule the API server (or the
// operator owning a custom resource) enforces when the object is created, so breaking it means a failed
// `kubectl apply`, or a mistake that applies cleanly and breaks at run time (a probe on a port the
// container does not declare, a selector that selects nothing, a kustomization that forgets a file).
// They are kept few on purpose; the strict decoding does the bulk of the work.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	kubeflowv1 "github.com/kubeflow/training-operator/pkg/apis/kubeflow.org/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	kustomize "sigs.k8s.io/kustomize/api/types"
)

// checker collects `field: message` problems about one object.
type checker struct {
	file     string
	problems []string
}

func (c *checker) fail(field, format string, args ...any) {
	c.problems = append(c.problems, field+": "+fmt.Sprintf(format, args...))
}

// objectName: metadata.name is required and must be a DNS name (the API server's rule; Services and
// PyTorchJobs, whose names become DNS labels of pods and Services, need the stricter RFC 1035 label).
func (c *checker) objectName(kindName, name, generateName string) {
	if name == "" {
		if generateName == "" {
			c.fail("metadata.name", "required")
		}
		return
	}
	var errs []string
	if kindName == "Service" || kindName == "PyTorchJob" {
		errs = validation.IsDNS1035Label(name)
	} else {
		errs = validation.IsDNS1123Subdomain(name)
	}
	if len(errs) > 0 {
		c.fail("metadata.name", "%q is not a valid name: %s", name, strings.Join(errs, "; "))
	}
}

// selector: required selectors must select something, and, as the API server demands of Deployments, a
// selector must match the labels of the pod template it owns.
func (c *checker) selector(path string, sel *metav1.LabelSelector, templateLabels map[string]string) {
	if sel == nil || len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		c.fail(path, "required (an empty selector selects every pod or Service in the namespace)")
		return
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		c.fail(path, "%v", err)
		return
	}
	if templateLabels != nil && !s.Matches(labels.Set(templateLabels)) {
		c.fail(path, "does not match the pod template's labels %v", templateLabels)
	}
}

// podSpec: at least one container; every container named, with an image; every volume mount backed by a
// volume; probes well formed.
func (c *checker) podSpec(path string, spec *corev1.PodSpec) {
	if len(spec.Containers) == 0 {
		c.fail(path+".containers", "at least one container is required")
	}
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
	}
	container := func(p string, ct *corev1.Container) {
		if ct.Name == "" {
			c.fail(p+".name", "required")
		}
		if ct.Image == "" {
			c.fail(p+".image", "required")
		}
		for j, m := range ct.VolumeMounts {
			if !volumes[m.Name] {
				c.fail(fmt.Sprintf("%s.volumeMounts[%d].name", p, j), "no volume named %q in %s.volumes", m.Name, path)
			}
		}
		c.probe(p+".livenessProbe", ct.LivenessProbe, ct.Ports)
		c.probe(p+".readinessProbe", ct.ReadinessProbe, ct.Ports)
		c.probe(p+".startupProbe", ct.StartupProbe, ct.Ports)
	}
	for i := range spec.InitContainers {
		container(fmt.Sprintf("%s.initContainers[%d]", path, i), &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		container(fmt.Sprintf("%s.containers[%d]", path, i), &spec.Containers[i])
	}
}

// probe: exactly one handler; an HTTP probe has an absolute path and a port, by number or by the name of
// one of the container's ports.
func (c *checker) probe(path string, p *corev1.Probe, ports []corev1.ContainerPort) {
	if p == nil {
		return
	}
	handlers := 0
	for _, set := range []bool{p.HTTPGet != nil, p.Exec != nil, p.TCPSocket != nil, p.GRPC != nil} {
		if set {
			handlers++
		}
	}
	if handlers != 1 {
		c.fail(path, "exactly one of httpGet, exec, tcpSocket and grpc is required, got %d", handlers)
	}
	if h := p.HTTPGet; h != nil {
		if !strings.HasPrefix(h.Path, "/") {
			c.fail(path+".httpGet.path", "required, an absolute path such as /health (got %q)", h.Path)
		}
		c.port(path+".httpGet.port", h.Port, ports)
	}
}

// port: a number in 1..65535 or the name of one of `ports`.
func (c *checker) port(path string, port intstr.IntOrString, ports []corev1.ContainerPort) {
	if port.Type == intstr.Int {
		if port.IntVal < 1 || port.IntVal > 65535 {
			c.fail(path, "required, a port number in 1..65535 or a port name (got %d)", port.IntVal)
		}
		return
	}
	if !slices.ContainsFunc(ports, func(p corev1.ContainerPort) bool { return p.Name == port.StrVal }) {
		c.fail(path, "the container declares no port named %q", port.StrVal)
	}
}

func checkDeployment(c *checker, d *appsv1.Deployment) {
	c.selector("spec.selector", d.Spec.Selector, d.Spec.Template.Labels)
	c.podSpec("spec.template.spec", &d.Spec.Template.Spec)
}

func checkJob(c *checker, j *batchv1.Job) {
	spec := &j.Spec.Template.Spec
	c.podSpec("spec.template.spec", spec)
	if spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		c.fail("spec.template.spec.restartPolicy", "required for a Job: Never or OnFailure (got %q)",
			spec.RestartPolicy)
	}
	if j.Spec.PodFailurePolicy != nil && spec.RestartPolicy != corev1.RestartPolicyNever {
		c.fail("spec.podFailurePolicy", "requires spec.template.spec.restartPolicy Never")
	}
	indexed := j.Spec.CompletionMode != nil && *j.Spec.CompletionMode == batchv1.IndexedCompletion
	if indexed && j.Spec.Completions == nil {
		c.fail("spec.completions", "required with completionMode Indexed")
	}
}

func checkService(c *checker, s *corev1.Service) {
	if s.Spec.ClusterIP != corev1.ClusterIPNone && len(s.Spec.Ports) == 0 {
		c.fail("spec.ports", "at least one port is required")
	}
	for i, p := range s.Spec.Ports {
		if p.Port < 1 || p.Port > 65535 {
			c.fail(fmt.Sprintf("spec.ports[%d].port", i), "required, in 1..65535 (got %d)", p.Port)
		}
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			c.fail(fmt.Sprintf("spec.ports[%d].name", i), "required when a Service has several ports")
		}
	}
}

func checkPersistentVolumeClaim(c *checker, p *corev1.PersistentVolumeClaim) {
	if len(p.Spec.AccessModes) == 0 {
		c.fail("spec.accessModes", "at least one access mode is required")
	}
	if _, ok := p.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
		c.fail("spec.resources.requests.storage", "required")
	}
}

func checkHPA(c *checker, h *autoscalingv2.HorizontalPodAutoscaler) {
	ref := h.Spec.ScaleTargetRef
	if ref.Kind == "" || ref.Name == "" {
		c.fail("spec.scaleTargetRef", "kind and name are required")
	}
	if h.Spec.MaxReplicas < 1 {
		c.fail("spec.maxReplicas", "required, at least 1")
	}
	if h.Spec.MinReplicas != nil && *h.Spec.MinReplicas > h.Spec.MaxReplicas {
		c.fail("spec.minReplicas", "%d is above maxReplicas %d", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
}

func checkPDB(c *checker, p *policyv1.PodDisruptionBudget) {
	if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
		c.fail("spec", "exactly one of minAvailable and maxUnavailable is required")
	}
	c.selector("spec.selector", p.Spec.Selector, nil)
}

func checkServiceMonitor(c *checker, m *monitoringv1.ServiceMonitor) {
	c.selector("spec.selector", &m.Spec.Selector, nil)
	if len(m.Spec.Endpoints) == 0 {
		c.fail("spec.endpoints", "at least one endpoint is required")
	}
	for i, e := range m.Spec.Endpoints {
		if e.Port == "" && e.TargetPort == nil {
			c.fail(fmt.Sprintf("spec.endpoints[%d]", i), "port (a Service port's name) or targetPort is required")
		}
		if e.Path != "" && !strings.HasPrefix(e.Path, "/") {
			c.fail(fmt.Sprintf("spec.endpoints[%d].path", i), "must be an absolute path (got %q)", e.Path)
		}
	}
}

// checkPyTorchJob: the training operator's admission webhook rules (pkg/webhooks/pytorch in
// kubeflow/training-operator v1.9): only Master and Worker replicas, exactly one Master, containers with
// images, and in each replica a container named "pytorch", the one the operator gives MASTER_ADDR,
// MASTER_PORT, RANK and WORLD_SIZE and whose port "pytorchjob-port" becomes MASTER_PORT.
func checkPyTorchJob(c *checker, j *kubeflowv1.PyTorchJob) {
	specs := j.Spec.PyTorchReplicaSpecs
	if len(specs) == 0 {
		c.fail("spec.pytorchReplicaSpecs", "required")
	}
	types := make([]string, 0, len(specs))
	for t := range specs {
		types = append(types, string(t))
	}
	sort.Strings(types)
	for _, t := range types {
		rtype := kubeflowv1.ReplicaType(t)
		path := "spec.pytorchReplicaSpecs." + t
		spec := specs[rtype]
		if rtype != kubeflowv1.PyTorchJobReplicaTypeMaster && rtype != kubeflowv1.PyTorchJobReplicaTypeWorker {
			c.fail(path, "unsupported replica type %q: Master or Worker", t)
		}
		if spec == nil {
			c.fail(path, "required")
			continue
		}
		c.podSpec(path+".template.spec", &spec.Template.Spec)
		if !slices.ContainsFunc(spec.Template.Spec.Containers, func(ct corev1.Container) bool {
			return ct.Name == kubeflowv1.PyTorchJobDefaultContainerName
		}) {
			c.fail(path+".template.spec.containers", "a container named %q is required",
				kubeflowv1.PyTorchJobDefaultContainerName)
		}
		if rtype == kubeflowv1.PyTorchJobReplicaTypeMaster && (spec.Replicas == nil || *spec.Replicas != 1) {
			c.fail(path+".replicas", "must be 1")
		}
		if rtype == kubeflowv1.PyTorchJobReplicaTypeWorker && spec.Replicas != nil && *spec.Replicas < 1 {
			c.fail(path+".replicas", "must be at least 1")
		}
	}
}

// checkKustomization: every resource exists and stays inside the kustomization's folder (kustomize's
// default load restrictor refuses files outside it), and every manifest beside kustomization.yaml is
// listed, so that a new file cannot be forgotten by `kubectl apply -k`.
func checkKustomization(c *checker, k *kustomize.Kustomization) {
	dir := filepath.Dir(c.file)
	listed := map[string]bool{filepath.Base(c.file): true}
	for i, r := range k.Resources {
		if strings.Contains(r, "://") || strings.HasPrefix(r, "github.com/") {
			continue // a remote base: not checked offline
		}
		field := fmt.Sprintf("resources[%d]", i)
		info, err := os.Stat(filepath.Join(dir, r))
		if err != nil {
			c.fail(field, "%q does not exist beside %s", r, filepath.Base(c.file))
			continue
		}
		clean := filepath.Clean(r)
		if !info.IsDir() && (clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator))) {
			c.fail(field, "%q is outside the kustomization's folder; kustomize refuses to load it", r)
		}
		listed[clean] = true
	}
	for _, p := range k.Patches {
		if p.Path != "" {
			listed[filepath.Clean(p.Path)] = true
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.fail("resources", "%v", err)
		return
	}
	for _, e := range entries {
		if !e.IsDir() && isYAML(e.Name()) && !listed[e.Name()] {
			c.fail("resources", "%s is in the kustomization's folder but not listed", e.Name())
		}
	}
}
