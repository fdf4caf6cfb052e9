use std::path::PathBuf;

use anyhow::{Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::{Client, Resource};
use serde_json::Value;

/// A namespace of the shared control plane, with the four CRDs installed and Established.
pub async fn setup(test: &str) -> Result<(Client, String)> {
    let (client, ns) = splai_testbed::namespace(test).await?;
    install_crds(&client).await?;
    Ok((client, ns))
}

/// Applies the CRDs (idempotent, so every test may call it) and waits until they are served.
pub async fn install_crds(client: &Client) -> Result<Vec<CustomResourceDefinition>> {
    Ok(splai_operator::crd::install(client).await?)
}

/// A sample from `config/samples/`, such as `splaijob`.
pub fn sample(kind: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../config/samples/splai_v1alpha1_{kind}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An untyped API for resources of `K`, so tests can send what the Rust types cannot express.
pub fn raw_api<K: Resource<DynamicType = ()>>(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()))
}

pub async fn create_raw<K: Resource<DynamicType = ()>>(
    client: &Client,
    ns: &str,
    object: Value,
) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject = serde_json::from_value(object).expect("a Kubernetes object");
    raw_api::<K>(client, ns)
        .create(&PostParams::default(), &object)
        .await
}

/// The server's status message of a failed request, which must be `code`.
pub fn rejection<T: std::fmt::Debug>(result: Result<T, kube::Error>, code: u16) -> Result<String> {
    match result {
        Err(kube::Error::Api(status)) if status.code == code => Ok(status.message),
        other => bail!("expected the API server to answer {code}, got {other:?}"),
    }
}
