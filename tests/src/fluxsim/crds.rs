//! Installing the real Flux CRDs (from `shared/reference/flux-crds/`) into an API server.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::ResourceExt;

use super::Error;

/// The Flux CRDs; CI lays `shared/` beside the repository, as on developers' machines.
pub const FLUX_CRDS_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/reference/flux-crds"
);

const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Applies every CRD in [`FLUX_CRDS_DIR`] and waits until each is `Established`.
pub async fn install_flux_crds(client: &kube::Client) -> Result<(), Error> {
    install_crds_from(client, Path::new(FLUX_CRDS_DIR)).await
}

pub async fn install_crds_from(client: &kube::Client, dir: &Path) -> Result<(), Error> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        crds.push(serde_saphyr::from_str(&text).map_err(|e| Error::Crd {
            file: file.display().to_string(),
            message: e.to_string(),
        })?);
    }
    apply_and_wait(client, crds).await
}

/// Installs the `FluxConfig` CRD exactly as the binaries generate it (no file needed) and waits
/// until it is `Established`.
pub async fn install_fluxconfig_crd(client: &kube::Client) -> Result<(), Error> {
    let yaml = fluxconfig_api::crdgen::fluxconfig_crd_yaml().map_err(|e| Error::Crd {
        file: fluxconfig_api::crdgen::CRD_PATH.to_string(),
        message: e.to_string(),
    })?;
    let crd = serde_saphyr::from_str(&yaml).map_err(|e| Error::Crd {
        file: fluxconfig_api::crdgen::CRD_PATH.to_string(),
        message: e.to_string(),
    })?;
    apply_and_wait(client, vec![crd]).await
}

async fn apply_and_wait(
    client: &kube::Client,
    crds: Vec<CustomResourceDefinition>,
) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("fluxsim").force();
    let mut names = Vec::new();
    for crd in crds {
        let name = crd.name_any();
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        names.push(name);
    }
    for name in names {
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(ESTABLISH_TIMEOUT, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Error::Timeout(format!("waiting for CRD {name}: {e}"))),
            Err(_) => return Err(Error::Timeout(format!("CRD {name} not Established"))),
        }
    }
    Ok(())
}
