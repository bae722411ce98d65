package fleet

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/wormgate/wormgate/receiver/configerr"
)

// Config is the `fleet:` section. No URLs means standalone: the gateway
// shares nothing and nothing else here is used.
type Config struct {
	// URLs are the NATS servers, nats://host:port or tls://host:port.
	URLs []string `yaml:"urls"`
	// CredentialsFile is a NATS credentials file (user JWT and nkey seed).
	CredentialsFile string `yaml:"credentials_file"`
	// TLS secures the connection: the CA that signed the servers'
	// certificates, and this gateway's own certificate and key.
	TLS TLSConfig `yaml:"tls"`
	// Bucket is the key-value bucket all gateways share.
	Bucket string `yaml:"bucket"`
	// Replicas is the bucket's replication factor when this gateway
	// creates it (an existing bucket keeps its own).
	Replicas int `yaml:"replicas"`
	// Name is this gateway's name in the fleet; empty: the host name.
	Name string `yaml:"name"`
	// InsecureLab allows a connection without TLS or credentials, for a
	// lab; never in production, where anyone who reaches NATS could ban.
	InsecureLab bool `yaml:"insecure_lab"`
}

// TLSConfig names the PEM files of the NATS connection.
type TLSConfig struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// DefaultConfig is standalone, with the defaults a fleet starts from.
func DefaultConfig() Config {
	return Config{Bucket: "wormgate_bans", Replicas: 3}
}

// Enabled reports whether the gateway is part of a fleet.
func (c Config) Enabled() bool { return len(c.URLs) > 0 }

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	bucketRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// SanitizeName turns a host name into a gateway name: the characters a
// NATS key token cannot hold become '-'.
func SanitizeName(host string) string {
	b := []byte(host)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// Validate reports every problem of an enabled fleet section, each a
// *configerr.FieldError relative to the section.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	bad := func(path string, kind error, format string, args ...any) {
		errs = append(errs, configerr.New(path, kind, format, args...))
	}
	tlsURL := false
	for i, u := range c.URLs {
		p, err := url.Parse(u)
		switch {
		case err != nil || p.Host == "" || p.Port() == "":
			bad(fmt.Sprintf("urls[%d]", i), configerr.ErrInvalid, "%q is not a NATS URL (nats://host:port or tls://host:port)", u)
		case p.Scheme == "tls":
			tlsURL = true
		case p.Scheme != "nats":
			bad(fmt.Sprintf("urls[%d]", i), configerr.ErrInvalid, "%q: scheme %q is not nats or tls", u, p.Scheme)
		}
	}
	for _, f := range []struct{ path, file string }{
		{"credentials_file", c.CredentialsFile}, {"tls.ca", c.TLS.CA}, {"tls.cert", c.TLS.Cert}, {"tls.key", c.TLS.Key},
	} {
		if f.file != "" && !filepath.IsAbs(f.file) {
			bad(f.path, configerr.ErrInvalid, "%q is not an absolute path", f.file)
		}
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		bad("tls.key", configerr.ErrRequired, "tls.cert and tls.key go together")
	}
	if !c.InsecureLab {
		if c.TLS.CA == "" && !tlsURL {
			bad("tls.ca", configerr.ErrRequired, "required: a fleet talks TLS (or set insecure_lab: true for a lab)")
		}
		if c.CredentialsFile == "" && c.TLS.Cert == "" {
			bad("credentials_file", configerr.ErrRequired, "required, or tls.cert and tls.key: NATS must know who publishes bans (or set insecure_lab: true for a lab)")
		}
	}
	if !bucketRE.MatchString(c.Bucket) {
		bad("bucket", configerr.ErrInvalid, "%q is not a bucket name (letters, digits, '-' and '_')", c.Bucket)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		bad("replicas", configerr.ErrOutOfRange, "%d is out of range (1-5)", c.Replicas)
	}
	if c.Name != "" && !nameRE.MatchString(c.Name) {
		bad("name", configerr.ErrInvalid, "%q is not a gateway name (up to 64 letters, digits, '-' and '_')", c.Name)
	}
	return errors.Join(errs...)
}

// tlsWanted reports whether the connection is to use TLS.
func (c Config) tlsWanted() bool {
	if c.TLS.CA != "" || c.TLS.Cert != "" {
		return true
	}
	for _, u := range c.URLs {
		if strings.HasPrefix(u, "tls://") {
			return true
		}
	}
	return false
}
