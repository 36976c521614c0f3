//! `--kustomization KEY=VALUE [KEY=VALUE ...]`: the parser lives in
//! `fluxconfig_api::kustomization_flag`, next to the wire type it produces, so the fuzz targets
//! reach it without building the testbed.

pub use fluxconfig_api::kustomization_flag::{
    format_kustomization, parse_bool, parse_dependencies, parse_duration, parse_kustomization,
    FlagError,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<char> = "name=path[]\"',hms01 9prune=true{}:é".chars().collect();
        for _ in 0..2000 {
            let n = rng.usize(0..5);
            let args: Vec<String> = (0..n)
                .map(|_| {
                    let len = rng.usize(0..20);
                    (0..len)
                        .map(|_| alphabet[rng.usize(0..alphabet.len())])
                        .collect()
                })
                .collect();
            let _ = parse_kustomization(&args);
        }
    }
}
