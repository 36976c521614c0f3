//! `clusterconfig.azure.com/use-managed-source: "true"`: a HelmRelease that one of the
//! configuration's Kustomizations applied takes its chart from the configuration's own
//! GitRepository, so charts kept in the same repository need no separate HelmRepository.

use fluxconfig_api::flux::HelmRelease;
use fluxconfig_api::labels;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::Api;
use serde_json::json;

use crate::compliance;
use crate::reconciler::{Context, Error, MANAGER};
use crate::translate::FluxObjects;

/// Whether the HelmRelease asks for the managed source and does not point at it yet.
pub fn needs_managed_source(hr: &HelmRelease, config: &str, namespace: &str) -> bool {
    let wants = hr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::USE_MANAGED_SOURCE))
        .is_some_and(|v| v == "true");
    if !wants {
        return false;
    }
    let current = hr.spec.chart.as_ref().map(|c| &c.spec.source_ref);
    !current.is_some_and(|r| {
        r.kind == "GitRepository"
            && r.name == config
            && r.namespace
                .as_deref()
                .unwrap_or(hr.metadata.namespace.as_deref().unwrap_or(""))
                == namespace
    })
}

pub async fn point_helm_releases_at_source(
    config: &str,
    namespace: &str,
    objects: &FluxObjects,
    ctx: &Context,
) -> Result<(), Error> {
    for k in &objects.kustomizations {
        let ks_name = k.metadata.name.clone().unwrap_or_default();
        let Some(live) = ctx
            .stores
            .kustomizations
            .get(&ObjectRef::new(&ks_name).within(namespace))
        else {
            continue;
        };
        for (hr_ns, hr_name) in compliance::helm_releases_in_inventory(&live) {
            let Some(hr) = ctx
                .stores
                .helm_releases
                .get(&ObjectRef::new(&hr_name).within(&hr_ns))
            else {
                continue;
            };
            // Only releases with a chart template have a source to repoint.
            if hr.spec.chart.is_none() || !needs_managed_source(&hr, config, namespace) {
                continue;
            }
            let patch = json!({
                "apiVersion": "helm.toolkit.fluxcd.io/v2",
                "kind": "HelmRelease",
                "metadata": {"name": hr_name, "namespace": hr_ns},
                "spec": {"chart": {"spec": {"sourceRef": {
                    "kind": "GitRepository",
                    "name": config,
                    "namespace": namespace,
                }}}},
            });
            let api: Api<HelmRelease> = Api::namespaced(ctx.client.clone(), &hr_ns);
            api.patch(
                &hr_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|source| Error::Apply {
                kind: "HelmRelease".to_string(),
                namespace: hr_ns.clone(),
                name: hr_name.clone(),
                source,
            })?;
            ctx.metrics.write("apply", "helmreleases");
            tracing::info!(namespace = %hr_ns, helmrelease = %hr_name, source = %config, "pointed HelmRelease at the managed GitRepository");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hr(annotation: Option<&str>, kind: &str, name: &str, ns: Option<&str>) -> HelmRelease {
        let mut v = json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "podinfo", "namespace": "podinfo"},
            "spec": {"interval": "5m", "chart": {"spec": {"chart": "./charts/podinfo",
                     "sourceRef": {"kind": kind, "name": name}}}}
        });
        if let Some(a) = annotation {
            v["metadata"]["annotations"] = json!({labels::USE_MANAGED_SOURCE: a});
        }
        if let Some(ns) = ns {
            v["spec"]["chart"]["spec"]["sourceRef"]["namespace"] = json!(ns);
        }
        serde_json::from_value(v).expect("fixture")
    }

    #[test]
    fn only_annotated_releases_not_yet_pointing_at_the_source_are_repointed() {
        let cfg = ("cluster-config", "cluster-config");
        assert!(needs_managed_source(
            &hr(Some("true"), "HelmRepository", "podinfo", None),
            cfg.0,
            cfg.1
        ));
        assert!(!needs_managed_source(
            &hr(None, "HelmRepository", "podinfo", None),
            cfg.0,
            cfg.1
        ));
        assert!(!needs_managed_source(
            &hr(Some("false"), "HelmRepository", "podinfo", None),
            cfg.0,
            cfg.1
        ));
        assert!(!needs_managed_source(
            &hr(
                Some("true"),
                "GitRepository",
                "cluster-config",
                Some("cluster-config")
            ),
            cfg.0,
            cfg.1
        ));
        // Same name in another namespace is another source.
        assert!(needs_managed_source(
            &hr(
                Some("true"),
                "GitRepository",
                "cluster-config",
                Some("other")
            ),
            cfg.0,
            cfg.1
        ));
    }
}
