// Command seccomp prints the seccomp profile that hack/local-cluster/up installs on the node as
// <kubelet root>/seccomp/kiln/buildkitd-userns.json, for rootful buildkitd in a pod with
// hostUsers: false (seccompProfile {type: Localhost, localhostProfile: kiln/buildkitd-userns.json}).
//
// It is containerd's RuntimeDefault profile as containerd gives it to a container with the default
// capabilities plus CAP_SYS_ADMIN (mount, unshare, setns, clone with namespace flags, ...), and two
// more syscalls that runc needs to start a RUN step and RuntimeDefault refuses with EPERM:
//
//	keyctl      runc joins a new session keyring ("unable to join session keyring: unable to
//	            create session key: operation not permitted"); BuildKit does not pass
//	            --no-new-keyring
//	pivot_root  runc enters the step's root filesystem ("error jailing process inside rootfs:
//	            pivot_root .: operation not permitted"); BuildKit does not pass --no-pivot
//
// Its own Go module (like hack/k8s and the provisioner, so that the repository's go.mod is
// untouched), pinned to the containerd release the local cluster runs (lib.sh CONTAINERD_VERSION).
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// defaultCaps are containerd's (and BuildKit's, for RUN steps) default capabilities.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

func main() {
	caps := append(append([]string{}, defaultCaps...), "CAP_SYS_ADMIN")
	spec := &specs.Spec{
		Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}},
		Linux:   &specs.Linux{},
	}
	p := seccomp.DefaultProfile(spec)
	p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"keyctl", "pivot_root"}, Action: specs.ActAllow})
	e := json.NewEncoder(os.Stdout)
	e.SetIndent("", "  ")
	if err := e.Encode(p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
