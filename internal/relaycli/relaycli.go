// Package relaycli is the command line of paradigm-relay: each command's
// flags, declared once with the defaults of the package that owns them
// (relay.Default*, admin.Default*), and the action that turns them into one
// call of internal/relay, internal/admin or internal/demo, with the printing
// an operator sees. cmd/relay only assembles these commands into the app.
//
// It is its own package, not flags.go files in internal/relay and
// internal/admin, so that those stay libraries that never see urfave/cli,
// the environment or os.Stderr: they take a Config. This package is the one
// place below cmd/ that reads flags.
package relaycli

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"paradigm/internal/cliflags"
	"paradigm/internal/relay"
	"paradigm/internal/store"
	"paradigm/internal/store/etcdstore"
)

// GlobalFlags are the flags every command takes, before or after its name
// (cliflags.Global): logging, the data folder, and the assignment store
// that several relays of a cluster share.
func GlobalFlags() []cli.Flag {
	return append(cliflags.Flags("PARADIGM_RELAY"),
		&cli.StringFlag{Name: "data", Value: relay.DefaultDataDir, Usage: "data folder: host key, authorized nodes, portaliases, status", EnvVars: []string{"PARADIGM_RELAY_DATA"}},
		&cli.StringFlag{Name: "store", Usage: "keep portaliases in etcd, shared by several relays: etcd://HOST:PORT[,HOST:PORT...]/PREFIX; the flat file in --data when empty", EnvVars: []string{"PARADIGM_RELAY_STORE"}},
		&cli.StringFlag{Name: "store-ca", Usage: "PEM file of the CA that signed etcd's certificate (turns TLS on)", EnvVars: []string{"PARADIGM_RELAY_STORE_CA"}},
		&cli.StringFlag{Name: "store-cert", Usage: "PEM client certificate for etcd's TLS client authentication (with --store-key)", EnvVars: []string{"PARADIGM_RELAY_STORE_CERT"}},
		&cli.StringFlag{Name: "store-key", Usage: "PEM private key of --store-cert", EnvVars: []string{"PARADIGM_RELAY_STORE_KEY"}},
	)
}

// OpenStore opens the assignment store that --store, --store-ca,
// --store-cert and --store-key name: nil (the flat file in --data) when
// --store is empty. Any command may call it; its errors name the flag.
func OpenStore(c *cli.Context) (store.Store, error) {
	return etcdstore.OpenURL(c.String("store"), c.String("store-ca"), c.String("store-cert"), c.String("store-key"))
}

// withStore runs fn with the store the --store flags name (nil for none),
// closed afterwards.
func withStore(c *cli.Context, fn func(store.Store) error) error {
	st, err := OpenStore(c)
	if err != nil {
		return err
	}
	if cl, ok := st.(io.Closer); ok {
		defer cl.Close()
	}
	return fn(st)
}

// printed prints msg on its own line unless err.
func printed(c *cli.Context, msg string, err error) error {
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, msg)
	return nil
}
