//! Key material for one cluster: a CA, the API server's serving certificate (signed by the CA, valid
//! for 127.0.0.1 so rustls accepts it) and the service-account signing key.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::error::ClusterError;

/// PEM-encoded certificates and keys, written to the cluster directory by the control plane.
pub struct ClusterPki {
    pub ca_cert_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// PKCS#8 ECDSA key; kube-apiserver signs tokens with it and verifies them with the same file.
    pub service_account_key_pem: String,
    /// Its public half (PKIX), which kube-apiserver's --service-account-key-file needs.
    pub service_account_pub_pem: String,
}

impl ClusterPki {
    /// `service_ip` is the first address of the service range (the `kubernetes` Service), which
    /// in-cluster clients would use; 127.0.0.1 is what local clients use.
    pub fn generate(service_ip: &str) -> Result<Self, ClusterError> {
        let pki = |e: rcgen::Error| ClusterError::Pki(e.to_string());
        let ca_key = KeyPair::generate().map_err(pki)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "flywheel-local-ca");
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate().map_err(pki)?;
        let sans = vec![
            "127.0.0.1".to_string(),
            service_ip.to_string(),
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ];
        let mut serving_params = CertificateParams::new(sans).map_err(pki)?;
        serving_params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving_params.signed_by(&serving_key, &issuer).map_err(pki)?;

        let sa_key = KeyPair::generate().map_err(pki)?;
        Ok(Self {
            ca_cert_pem: ca_cert.pem(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            service_account_key_pem: sa_key.serialize_pem(),
            service_account_pub_pem: sa_key.public_key_pem(),
        })
    }
}
