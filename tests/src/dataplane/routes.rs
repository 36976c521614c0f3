//! Maps request paths onto the data-plane operations of `fluxconfig_api::dataplane`.

use fluxconfig_api::dataplane::{ClusterRef, ClusterType};

/// Path of the testbed's fault switch (not part of the Azure-shaped protocol).
pub const FAULTS_PATH: &str = "/_testbed/faults";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `GET {cluster}/fluxConfigurations`
    AgentList,
    /// `PUT {cluster}/fluxConfigurations/{name}/status`
    AgentStatus(String),
    /// `PUT {cluster}/agentHeartbeat`
    AgentHeartbeat,
    /// `GET {cluster}/providers/Microsoft.KubernetesConfiguration/fluxConfigurations`
    ManagementList,
    /// `PUT|GET|DELETE …/fluxConfigurations/{name}`
    ManagementOne(String),
}

impl Target {
    /// Whether the agent calls this (and faults apply to it).
    pub fn is_agent(&self) -> bool {
        matches!(
            self,
            Target::AgentList | Target::AgentStatus(_) | Target::AgentHeartbeat
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Faults,
    Cluster(ClusterRef, Target),
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn cluster_type(provider: &str, kind: &str) -> Option<ClusterType> {
    let t = if kind.eq_ignore_ascii_case("connectedClusters") {
        ClusterType::ConnectedClusters
    } else if kind.eq_ignore_ascii_case("managedClusters") {
        ClusterType::ManagedClusters
    } else {
        return None;
    };
    t.provider().eq_ignore_ascii_case(provider).then_some(t)
}

/// `None` when the path names nothing this server serves.
pub fn parse(path: &str) -> Option<Route> {
    if path == FAULTS_PATH {
        return Some(Route::Faults);
    }
    let segments: Vec<String> = path
        .strip_prefix('/')?
        .split('/')
        .map(percent_decode)
        .collect::<Option<_>>()?;
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let lit = |i: usize, expected: &str| s.get(i).is_some_and(|v| v.eq_ignore_ascii_case(expected));
    if s.len() < 9 || !lit(0, "subscriptions") || !lit(2, "resourceGroups") || !lit(4, "providers")
    {
        return None;
    }
    let cluster = ClusterRef {
        subscription_id: s[1].to_string(),
        resource_group: s[3].to_string(),
        cluster_type: cluster_type(s[5], s[6])?,
        cluster_name: s[7].to_string(),
    };
    let rest = &s[8..];
    let is = |v: &str, expected: &str| v.eq_ignore_ascii_case(expected);
    let target = match rest {
        [a] if is(a, "fluxConfigurations") => Target::AgentList,
        [a] if is(a, "agentHeartbeat") => Target::AgentHeartbeat,
        [a, name, b] if is(a, "fluxConfigurations") && is(b, "status") => {
            Target::AgentStatus(name.to_string())
        }
        [p, rp, f]
            if is(p, "providers")
                && is(rp, "Microsoft.KubernetesConfiguration")
                && is(f, "fluxConfigurations") =>
        {
            Target::ManagementList
        }
        [p, rp, f, name]
            if is(p, "providers")
                && is(rp, "Microsoft.KubernetesConfiguration")
                && is(f, "fluxConfigurations") =>
        {
            Target::ManagementOne(name.to_string())
        }
        _ => return None,
    };
    Some(Route::Cluster(cluster, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterRef {
        ClusterRef {
            subscription_id: "sub".into(),
            resource_group: "rg".into(),
            cluster_type: ClusterType::ConnectedClusters,
            cluster_name: "arc".into(),
        }
    }

    #[test]
    fn parses_the_contract_paths() {
        let c = cluster();
        let cases = [
            (c.configurations_path(), Target::AgentList),
            (c.status_path("cfg"), Target::AgentStatus("cfg".into())),
            (c.heartbeat_path(), Target::AgentHeartbeat),
            (c.management_path(None), Target::ManagementList),
            (
                c.management_path(Some("cfg")),
                Target::ManagementOne("cfg".into()),
            ),
        ];
        for (path, target) in cases {
            assert_eq!(
                parse(&path),
                Some(Route::Cluster(c.clone(), target)),
                "{path}"
            );
        }
    }

    #[test]
    fn rejects_mismatched_provider_and_junk() {
        for p in [
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.ContainerService/connectedClusters/c/fluxConfigurations",
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.Kubernetes/connectedClusters/c/other",
            "/subscriptions/s/resourceGroups//providers/Microsoft.Kubernetes/connectedClusters/c/fluxConfigurations",
            "/",
            "",
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.Kubernetes/connectedClusters/c/fluxConfigurations/%zz/status",
        ] {
            assert_eq!(parse(p), None, "{p}");
        }
    }

    #[test]
    fn literal_segments_are_case_insensitive() {
        let p = "/SUBSCRIPTIONS/s/resourcegroups/r/providers/microsoft.kubernetes/CONNECTEDCLUSTERS/c/fluxconfigurations";
        assert!(matches!(
            parse(p),
            Some(Route::Cluster(_, Target::AgentList))
        ));
    }
}
