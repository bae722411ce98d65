package fleet

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wormgate/wormgate/receiver/configerr"
)

func TestConfigValidate(t *testing.T) {
	lab := func(c Config) Config {
		d := DefaultConfig()
		d.URLs = []string{"nats://192.0.2.1:4222"}
		d.InsecureLab = true
		if c.URLs != nil {
			d.URLs = c.URLs
		}
		d.CredentialsFile, d.TLS, d.Name = c.CredentialsFile, c.TLS, c.Name
		if c.Bucket != "" {
			d.Bucket = c.Bucket
		}
		if c.Replicas != 0 {
			d.Replicas = c.Replicas
		}
		return d
	}
	secure := func(c Config) Config { c = lab(c); c.InsecureLab = false; return c }
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "standalone", cfg: DefaultConfig()},
		{name: "lab", cfg: lab(Config{Name: "gw-1"})},
		{name: "tls and credentials", cfg: secure(Config{URLs: []string{"tls://nats.example.net:4222"}, CredentialsFile: "/etc/wormgate/nats.creds"})},
		{name: "mutual tls", cfg: secure(Config{TLS: TLSConfig{CA: "/etc/ca.pem", Cert: "/etc/c.pem", Key: "/etc/k.pem"}})},
		{name: "neither tls nor credentials", cfg: secure(Config{}), want: []string{"credentials_file", "tls.ca"}},
		{name: "credentials without tls", cfg: secure(Config{CredentialsFile: "/etc/n.creds"}), want: []string{"tls.ca"}},
		{name: "bad urls", cfg: lab(Config{URLs: []string{"http://x:1", "nats://nohost", "::"}}), want: []string{"urls[0]", "urls[1]", "urls[2]"}},
		{name: "relative files", cfg: lab(Config{CredentialsFile: "n.creds", TLS: TLSConfig{CA: "ca.pem"}}), want: []string{"credentials_file", "tls.ca"}},
		{name: "cert without key", cfg: lab(Config{TLS: TLSConfig{Cert: "/etc/c.pem"}}), want: []string{"tls.key"}},
		{name: "bad names", cfg: lab(Config{Name: "gw.1", Bucket: "my bucket", Replicas: 7}), want: []string{"bucket", "name", "replicas"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, fe := range configerr.Flatten(tc.cfg.Validate()) {
				got = append(got, fe.Path)
			}
			slices.Sort(got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("fields with errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSanitizeName(t *testing.T) {
	if got := SanitizeName("gw1.example.net"); got != "gw1-example-net" {
		t.Errorf("SanitizeName = %q", got)
	}
}
