//! Certificates for TLS tests, made with the openssl CLI at test time.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// A CA and a certificate for 127.0.0.1 signed by it, written into `dir`:
/// (CA certificate, server certificate, server key).
pub fn make_certs(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("the openssl CLI makes the test certificates; install openssl")?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(&[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Trellis test CA"]].concat())?;
    openssl(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat())?;
    std::fs::write(dir.join("server.ext"), "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])?;
    Ok((dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key")))
}
