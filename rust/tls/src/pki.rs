//! Certificates for tests and benchmarks: a CA, leaves carrying roles and the loopback
//! addresses, and CRLs (feature `pki`).

use std::path::Path;

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams,
    CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};

use crate::{TlsConfig, ROLE_URI};

/// A certificate authority.
pub struct Pki {
    cert: Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// The key as PKCS#8 DER.
    pub key_der: Vec<u8>,
    pub serial: u64,
}

/// What a leaf holds.
pub struct Leaf<'a> {
    pub name: &'a str,
    pub serial: u64,
    /// Role names: meta, local, client, admin.
    pub roles: &'a [&'a str],
    /// Valid only in 2000 (long expired).
    pub expired: bool,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate().expect("generating a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2099, 1, 1);
        let cert = params.self_signed(&key).expect("signing the CA");
        Pki { cert, key }
    }

    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for 127.0.0.1, ::1 and localhost, for both server and client use.
    pub fn issue(&self, leaf: &Leaf) -> Issued {
        self.issue_for(leaf, &[])
    }

    /// The same, also valid for `hosts` (IP addresses or DNS names).
    pub fn issue_for(&self, leaf: &Leaf, hosts: &[String]) -> Issued {
        let key = KeyPair::generate().expect("generating a key");
        let mut names = vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ];
        names.extend(hosts.iter().cloned());
        let mut params = CertificateParams::new(names).expect("leaf params");
        for role in leaf.roles {
            params.subject_alt_names.push(SanType::URI(
                format!("{ROLE_URI}{role}").try_into().expect("a role URI"),
            ));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.name);
        params.serial_number = Some(SerialNumber::from(leaf.serial));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if leaf.expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2000, 12, 31);
        } else {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2099, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signing a leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            serial: leaf.serial,
        }
    }

    /// A CRL revoking `serials`.
    pub fn crl_pem(&self, serials: &[u64]) -> String {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2000, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: date_time_ymd(2001, 1, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .expect("signing a CRL")
            .pem()
            .expect("a CRL's PEM")
    }

    /// Writes `dir/NAME.crt`, `dir/NAME.key`, `dir/ca-NAME.pem` (this CA) and, where
    /// `crl` is given, `dir/NAME.crl`, and returns the configuration naming them.
    pub fn write(&self, dir: &Path, issued: &Issued, name: &str, crl: Option<&str>) -> TlsConfig {
        let file = |suffix: &str, text: &str| {
            let p = dir.join(format!("{name}.{suffix}"));
            std::fs::write(&p, text).expect("writing a certificate file");
            p
        };
        TlsConfig {
            enable: true,
            ca_path: file("ca.pem", &self.ca_pem()),
            crl_path: crl.map(|c| file("crl", c)).unwrap_or_default(),
            cert_path: file("crt", &issued.cert_pem),
            key_path: file("key", &issued.key_pem),
            ..TlsConfig::default()
        }
    }
}
