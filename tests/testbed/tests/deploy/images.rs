//! The Dockerfiles' two ways to an image: the default target compiles the binaries in the build
//! stage (`docker build`, deploy/README.md), and the `prebuilt` target wraps binaries built
//! outside (scripts/node-images.sh, for tests/pods). Both share one runtime stage, so the pods
//! run what users build. A stage named through a build argument is not followed by buildah, so
//! every stage is named literally.

use crate::support::repo;

/// Each stage: its `FROM` line and the instructions under it.
fn stages(dockerfile: &str) -> Vec<(String, Vec<String>)> {
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            stages.push((line.to_owned(), Vec::new()));
        } else if let Some((_, body)) = stages.last_mut()
            && !line.is_empty()
            && !line.starts_with('#')
        {
            body.push(line.to_owned());
        }
    }
    stages
}

#[test]
fn every_dockerfile_compiles_by_default_and_wraps_prebuilt_binaries_on_the_same_runtime_stage() {
    for (image, binaries) in [
        ("operator", "splai-operator"),
        ("gateway", "splai-gateway"),
        ("worker", "splai-worker"),
    ] {
        let path = repo().join(format!("deploy/docker/{image}.Dockerfile"));
        let text = std::fs::read_to_string(&path).unwrap();
        let stages = stages(&text);
        let names: Vec<&str> = stages.iter().map(|(from, _)| from.as_str()).collect();
        assert!(names[0].ends_with(" AS build"), "{image}: {names:?}");
        assert!(
            names.iter().any(|f| f.ends_with(" AS runtime")),
            "{image}: {names:?}"
        );
        assert!(
            names.contains(&"FROM runtime AS prebuilt"),
            "{image}: {names:?}"
        );
        let (last_from, last) = stages.last().unwrap();
        assert_eq!(last_from, "FROM runtime", "{image}: the default target");
        assert!(
            last.iter()
                .any(|l| l.starts_with("COPY --from=build ") && l.contains(binaries)),
            "{image}: the default target copies the compiled {binaries}: {last:?}"
        );
        for (from, _) in &stages {
            let base = from
                .trim_start_matches("FROM ")
                .split_whitespace()
                .next()
                .unwrap();
            assert!(
                !base.starts_with("${") || base == "${RUNTIME_IMAGE}",
                "{image}: {from} names a stage through a build argument"
            );
        }
        let runtime = &stages
            .iter()
            .find(|(f, _)| f.ends_with(" AS runtime"))
            .unwrap()
            .1;
        assert!(
            runtime.contains(&"USER 65532:65532".to_owned()),
            "{image}: {runtime:?}"
        );
    }
}
