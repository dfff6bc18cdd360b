// Package cli is kiln's developer commands: `kiln build` uploads a directory as an OCI source
// and builds it, `kiln get`, `kiln logs`, `kiln rebuild` and `kiln wait` follow ImageBuilds. They
// reach the cluster as kubectl does (--kubeconfig, --context, -n), and the same binary works as
// the kubectl plugin kubectl-kiln (a symlink, docs/cli.md).
package cli

import (
	"flag"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-dev/kiln/api/v1alpha1"
)

// Exit codes of kiln build and kiln wait.
const (
	ExitPushed     = 0 // the image was built and pushed
	ExitFailed     = 1 // the build failed (or kiln could not follow it)
	ExitOverBudget = 2 // the budget refused the image: nothing was pushed
	ExitRefused    = 3 // the API server refused the ImageBuild (admission)
	ExitUsage      = 4 // bad flags or arguments
)

// kubeFlags are kubectl's flags for reaching a cluster.
type kubeFlags struct {
	kubeconfig, context, namespace string
}

func (k *kubeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "the kubeconfig `file` (default: $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&k.context, "context", "", "the kubeconfig `context` to use")
	fs.StringVar(&k.namespace, "n", "", "the `namespace` (default: the context's)")
	fs.StringVar(&k.namespace, "namespace", "", "same as -n")
}

// kube is a connection to the cluster.
type kube struct {
	c         client.WithWatch
	cs        kubernetes.Interface
	namespace string
}

// connect loads the kubeconfig as kubectl does and opens the clients.
func (k *kubeFlags) connect() (*kube, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: k.context}
	if k.namespace != "" {
		overrides.Context.Namespace = k.namespace
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig's namespace: %w", err)
	}
	return newKube(cfg, ns)
}

// newKube opens the clients for cfg, in namespace ns.
func newKube(cfg *rest.Config, ns string) (*kube, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := kilnv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &kube{c: c, cs: cs, namespace: ns}, nil
}
