//! The kubeconfig handed to kubectl and kube-rs.

use base64::Engine;

pub fn render(server: &str, ca_pem: Option<&str>, token: &str) -> String {
    let ca_line = match ca_pem {
        Some(pem) => format!(
            "    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
        ),
        None => String::new(),
    };
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: testbed\n  \
           cluster:\n    \
             server: {server}\n\
         {ca_line}\
         users:\n\
         - name: testbed\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: testbed\n  \
           context:\n    \
             cluster: testbed\n    \
             user: testbed\n    \
             namespace: default\n\
         current-context: testbed\n\
         preferences: {{}}\n"
    )
}

/// Writes via a temporary file and rename so readers never see a partial kubeconfig.
pub fn write_atomic(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| std::path::Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "kubeconfig".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
