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

// OpenShared opens the shared store that --store, --store-ca, --store-cert
// and --store-key name: the portaliases and the authorization documents
// over one connection; nil (the flat files in --data) when --store is
// empty. Any command may call it; its errors name the flag.
func OpenShared(c *cli.Context) (*etcdstore.Shared, error) {
	return etcdstore.OpenShared(c.String("store"), c.String("store-ca"), c.String("store-cert"), c.String("store-key"))
}

// withStore runs fn with the portalias store the --store flags name (nil
// for none), closed afterwards.
func withStore(c *cli.Context, fn func(store.Store) error) error {
	sh, err := OpenShared(c)
	if err != nil {
		return err
	}
	defer sh.Close()
	return fn(sh.Store())
}

// withSite runs fn with where the authorization lives: the documents of
// the --store flags' store, or the flat files in --data, unless the relay
// of that folder keeps them in a shared store (a change there would be
// lost).
func withSite(c *cli.Context, fn func(relay.Site) error) error {
	sh, err := OpenShared(c)
	if err != nil {
		return err
	}
	defer sh.Close()
	site := relay.Site{DataDir: c.String("data"), Docs: sh.Docs()}
	if sh == nil {
		if shared := relay.SharedStoreOf(site.DataDir); shared != "" {
			return fmt.Errorf("the relay on %s keeps its authorized nodes, tokens and pending list in %s: give --store %s, with --store-ca, --store-cert and --store-key if it uses TLS", site.DataDir, shared, shared)
		}
	}
	return fn(site)
}

// printed prints msg on its own line unless err.
func printed(c *cli.Context, msg string, err error) error {
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, msg)
	return nil
}
