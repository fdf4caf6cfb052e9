//! A self-signed certificate for the admission webhook, for clusters without cert-manager.
//!
//! The API server only calls a webhook whose certificate it can verify with the `caBundle` of the
//! `ValidatingWebhookConfiguration`. Every replica serves the webhook, so all of them must present
//! certificates from one CA: the first replica to start makes the CA and a serving certificate for
//! the webhook Service's DNS names and stores them in a Secret of the system namespace; every
//! other replica, and every restart, reads that Secret. Each one then writes the CA into the
//! `caBundle` of the webhooks that call that Service, which changes nothing once one has done it,
//! and keeps it there: a configuration applied again later, its `caBundle` empty, gets the CA
//! back within a moment ([`SelfSigned::keep_injected`]).
//!
//! With cert-manager, mount its Secret into `--webhook-cert-dir` instead: files found there win,
//! and nothing here runs (nor needs the Secret and webhook-configuration permissions).

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The Secret's keys, as cert-manager names them, so either source can be mounted the same way.
pub const CERT_KEY: &str = "tls.crt";
pub const PRIVATE_KEY: &str = "tls.key";
pub const CA_KEY: &str = "ca.crt";
/// Years the CA and the serving certificate hold. Nothing renews them: delete the Secret and
/// restart the operator to issue new ones.
const VALID_YEARS: i16 = 10;
const CONFLICT_RETRIES: usize = 8;

/// Where the certificate is kept and who it is for.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    /// The namespace of the Secret and of the webhook Service.
    pub namespace: String,
    /// The Secret holding `tls.crt`, `tls.key` and `ca.crt`.
    pub secret: String,
    /// The Service the API server calls the webhook through.
    pub service: String,
    /// The `ValidatingWebhookConfiguration` whose webhooks call that Service.
    pub configuration: String,
    /// The Service agents dial, when the agent endpoint is served with the same certificate.
    pub agent_service: Option<String>,
}

/// PEM text of the CA, the serving certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading or creating the webhook certificate Secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "the Secret {namespace}/{name} has no `{key}`; delete it, and the next operator to start makes a new one"
    )]
    IncompleteSecret {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error(
        "writing the webhook CA into the caBundle of ValidatingWebhookConfiguration {name}: {source}"
    )]
    Configuration { name: String, source: kube::Error },
    #[error("gave up writing the caBundle of {name} after {CONFLICT_RETRIES} conflicting updates")]
    Conflicts { name: String },
    #[error("generating the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl SelfSigned {
    /// The names clients may use for the Services: the API server dials the webhook's as
    /// `SERVICE.NAMESPACE.svc`, and agents the agent Service's, in one of these forms.
    pub fn dns_names(&self) -> Vec<String> {
        let ns = &self.namespace;
        std::iter::once(&self.service)
            .chain(self.agent_service.as_ref())
            .flat_map(|svc| {
                [
                    svc.clone(),
                    format!("{svc}.{ns}"),
                    format!("{svc}.{ns}.svc"),
                    format!("{svc}.{ns}.svc.cluster.local"),
                ]
            })
            .collect()
    }

    /// The certificate to serve with: the one in the Secret, or a new one stored there if there
    /// is none yet. Its CA is then in the `caBundle` of every webhook that calls the Service.
    pub async fn ensure(&self, client: &Client) -> Result<Issued, CertError> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let secret_error = |source| CertError::Secret {
            namespace: self.namespace.clone(),
            name: self.secret.clone(),
            source,
        };
        let issued = match secrets.get_opt(&self.secret).await.map_err(secret_error)? {
            Some(existing) => self.read(&existing)?,
            None => {
                let fresh = self.issue()?;
                match secrets
                    .create(&PostParams::default(), &self.to_secret(&fresh))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(secret = %self.secret, "made a self-signed webhook certificate");
                        fresh
                    }
                    // Another replica stored its certificate first: use that one.
                    Err(e) if is_conflict(&e) => {
                        self.read(&secrets.get(&self.secret).await.map_err(secret_error)?)?
                    }
                    Err(e) => return Err(secret_error(e)),
                }
            }
        };
        self.inject(client, &issued.ca_pem).await?;
        Ok(issued)
    }

    /// A new CA and a serving certificate for [`SelfSigned::dns_names`], signed by it.
    pub fn issue(&self) -> Result<Issued, CertError> {
        let today = Timestamp::now().to_zoned(TimeZone::UTC);
        let (year, month, day) = (today.year(), today.month(), today.day());
        let from = rcgen::date_time_ymd(i32::from(year), month as u8, day as u8);
        // Day 28 exists in every month, so the end date is always valid.
        let until = rcgen::date_time_ymd(
            i32::from(year + VALID_YEARS),
            month as u8,
            day.min(28) as u8,
        );

        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, format!("{} webhook CA", self.service));
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = from;
        ca.not_after = until;
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(self.dns_names())?;
        leaf.distinguished_name.push(
            DnType::CommonName,
            format!("{}.{}.svc", self.service, self.namespace),
        );
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.not_before = from;
        leaf.not_after = until;
        let cert = leaf.signed_by(&key, &ca)?;
        Ok(Issued {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn to_secret(&self, issued: &Issued) -> Secret {
        let data: BTreeMap<String, ByteString> = [
            (CERT_KEY, &issued.cert_pem),
            (PRIVATE_KEY, &issued.key_pem),
            (CA_KEY, &issued.ca_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "splai-operator".to_owned(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Secret::default()
        }
    }

    fn read(&self, secret: &Secret) -> Result<Issued, CertError> {
        let field = |key: &'static str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| CertError::IncompleteSecret {
                    namespace: self.namespace.clone(),
                    name: self.secret.clone(),
                    key,
                })
        };
        Ok(Issued {
            ca_pem: field(CA_KEY)?,
            cert_pem: field(CERT_KEY)?,
            key_pem: field(PRIVATE_KEY)?,
        })
    }

    /// Keeps `ca_pem` in the `caBundle`: writes it again each time the configuration changes
    /// (a `kubectl apply` of the manifests resets it to what the file holds, empty), for as
    /// long as the process runs. The configuration is watched by name, so the operator needs
    /// list and watch of that one name only.
    pub async fn keep_injected(self, client: Client, ca_pem: String) {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let by_name =
            watcher::Config::default().fields(&format!("metadata.name={}", self.configuration));
        let changes = watcher(api, by_name).default_backoff().applied_objects();
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            let result = match change {
                Ok(_) => self.inject(&client, &ca_pem).await.map(|_| ()),
                Err(e) => {
                    tracing::warn!(configuration = %self.configuration, error = %e, "watching the webhook configuration failed; retrying");
                    continue;
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "keeping the webhook CA in caBundle failed; trying again at the next change");
            }
        }
    }

    /// Writes `ca_pem` into the `caBundle` of each webhook that calls the Service. `Ok(false)`
    /// when nothing needed writing, or when the configuration is not installed (yet): the
    /// webhook is served either way, and the API server calls it once it is registered.
    pub async fn inject(&self, client: &Client, ca_pem: &str) -> Result<bool, CertError> {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let error = |source| CertError::Configuration {
            name: self.configuration.clone(),
            source,
        };
        for _ in 0..CONFLICT_RETRIES {
            let Some(mut config) = api.get_opt(&self.configuration).await.map_err(error)? else {
                tracing::warn!(
                    configuration = %self.configuration,
                    "no such ValidatingWebhookConfiguration; its caBundle was not written"
                );
                return Ok(false);
            };
            let mut changed = false;
            for hook in config.webhooks.iter_mut().flatten() {
                let calls_us = hook
                    .client_config
                    .service
                    .as_ref()
                    .is_some_and(|s| s.name == self.service && s.namespace == self.namespace);
                let current = hook.client_config.ca_bundle.as_ref().map(|b| &b.0[..]);
                if calls_us && current != Some(ca_pem.as_bytes()) {
                    hook.client_config.ca_bundle = Some(ByteString(ca_pem.as_bytes().to_vec()));
                    changed = true;
                }
            }
            if !changed {
                return Ok(false);
            }
            // `replace` carries the resourceVersion read above, so a concurrent writer gets a
            // 409 and this reads again rather than overwriting it.
            match api
                .replace(&self.configuration, &PostParams::default(), &config)
                .await
            {
                Ok(_) => {
                    tracing::info!(configuration = %self.configuration, "wrote the webhook CA into caBundle");
                    return Ok(true);
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(error(e)),
            }
        }
        Err(CertError::Conflicts {
            name: self.configuration.clone(),
        })
    }
}
