package main

import (
	kubeflowv1 "github.com/kubeflow/training-operator/pkg/apis/kubeflow.org/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	kustomize "sigs.k8s.io/kustomize/api/types"
)

// kind is how one apiVersion/kind is validated: the Go type it decodes into and its explicit checks.
type kind struct {
	new   func() any
	check func(c *checker, obj any)
	// named: metadata.name is required (everything but a Kustomization, which is not an API object).
	named bool
}

// register ties an apiVersion and kind to the Go type T that the API server (or the operator owning the
// custom resource) decodes it into.
func register[T any](apiVersion, kindName string, named bool, check func(c *checker, obj *T)) {
	kinds[apiVersion+" "+kindName] = kind{
		new:   func() any { return new(T) },
		check: func(c *checker, obj any) { check(c, obj.(*T)) },
		named: named,
	}
}

// kinds holds every kind that deploy/k8s may contain; anything else is an error ("bad kind"), so a typo
// in apiVersion or kind cannot slip through as "some custom resource".
var kinds = map[string]kind{}

func init() {
	// Kubernetes' built-in types (k8s.io/api).
	register[appsv1.Deployment]("apps/v1", "Deployment", true, checkDeployment)
	register[corev1.Service]("v1", "Service", true, checkService)
	register[corev1.PersistentVolumeClaim]("v1", "PersistentVolumeClaim", true, checkPersistentVolumeClaim)
	register[corev1.ConfigMap]("v1", "ConfigMap", true, func(*checker, *corev1.ConfigMap) {})
	register[batchv1.Job]("batch/v1", "Job", true, checkJob)
	register[autoscalingv2.HorizontalPodAutoscaler]("autoscaling/v2", "HorizontalPodAutoscaler", true,
		checkHPA)
	register[policyv1.PodDisruptionBudget]("policy/v1", "PodDisruptionBudget", true, checkPDB)
	// Custom resources, decoded into their operators' own Go types.
	register[monitoringv1.ServiceMonitor]("monitoring.coreos.com/v1", "ServiceMonitor", true,
		checkServiceMonitor)
	register[kubeflowv1.PyTorchJob]("kubeflow.org/v1", "PyTorchJob", true, checkPyTorchJob)
	// kustomize's kustomization.yaml (kubectl apply -k).
	register[kustomize.Kustomization]("kustomize.config.k8s.io/v1beta1", "Kustomization", false,
		checkKustomization)
}
