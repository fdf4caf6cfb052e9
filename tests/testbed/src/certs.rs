//! The control plane's key material, generated fresh for every start so nothing secret is
//! committed and no two runs share a CA.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Where [`write`] put each PEM file.
pub(crate) struct CertFiles {
    pub serving_ca: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub client_ca: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_public: PathBuf,
    pub sa_private: PathBuf,
}

/// Writes a serving CA and the apiserver's serving cert (127.0.0.1 and localhost), a client CA
/// and an admin client cert in `system:masters`, and a service-account key pair.
pub(crate) fn write(dir: &Path) -> Result<CertFiles> {
    let files = CertFiles {
        serving_ca: dir.join("serving-ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        client_ca: dir.join("client-ca.crt"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_public: dir.join("sa.pub"),
        sa_private: dir.join("sa.key"),
    };

    let serving_ca = ca("splai-testbed-serving-ca")?;
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &serving_ca)?;
    std::fs::write(&files.serving_ca, serving_ca.pem())?;
    std::fs::write(&files.serving_cert, server_cert.pem())?;
    std::fs::write(&files.serving_key, server_key.serialize_pem())?;

    let client_ca = ca("splai-testbed-client-ca")?;
    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin
        .distinguished_name
        .push(DnType::CommonName, "splai-testbed-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &client_ca)?;
    std::fs::write(&files.client_ca, client_ca.pem())?;
    std::fs::write(&files.admin_cert, admin_cert.pem())?;
    std::fs::write(&files.admin_key, admin_key.serialize_pem())?;

    let sa = KeyPair::generate()?;
    std::fs::write(&files.sa_public, sa.public_key_pem())?;
    std::fs::write(&files.sa_private, sa.serialize_pem())?;
    Ok(files)
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}
