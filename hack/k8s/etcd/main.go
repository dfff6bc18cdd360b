// Command etcd is etcd's own server, built from the module proxy so that envtest and the local
// cluster need no downloaded binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
