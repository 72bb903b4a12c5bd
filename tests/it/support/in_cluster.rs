//! What berth's documented in-cluster manifests (docs/cronjob/, docs/serve/)
//! need in a test's namespace, made one way for each test that runs them on
//! the real node: berth's image where the node pulls, the Role of
//! docs/rbac.yaml, the Engine's client certificates, the secrets the
//! manifests' env names, a PersistentVolume for their claim, and the
//! manifests themselves as one List for the test to adapt and apply.

use serde_json::{Value, json};

use crate::support::{World, build_berth_image, repo_root, text};

/// What [`World::in_cluster`] made.
pub struct InCluster {
    /// berth's image, pushed to the registry the node pulls from.
    pub image: String,
    /// The folder on the node behind the volume.
    pub state: std::path::PathBuf,
    /// The volume's name (and storage class), for the manifests' claim.
    pub volume: String,
    /// That volume: not created yet (the test names it in the claim first).
    pub persistent_volume: Value,
    /// The documented manifests, one `List`.
    pub manifests: Value,
}

impl World {
    /// kubectl in the test's namespace, which must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(output.status.success(), "kubectl {args:?}: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// Everything the manifests of `file` (under the repo's root) expect to
    /// find, and those manifests. `berth-secrets` holds unused registry and
    /// Git credentials, and `literals` (`KEY=VALUE`) besides.
    pub fn in_cluster(&self, file: &str, literals: &[String]) -> InCluster {
        let root = repo_root();
        let image = format!("{}/{}/berth:1", self.stack.registry, self.prefix);
        build_berth_image(&image);
        let pushed = std::process::Command::new("docker")
            .args(["push", "-q", &image])
            .output()
            .unwrap();
        assert!(pushed.status.success(), "{}", text(&pushed));

        self.kubectl_ok(&["apply", "-f", root.join("docs/rbac.yaml").to_str().unwrap()]);
        let certs = std::path::PathBuf::from(std::env::var("BERTH_STACK_DOCKER_CERT_PATH").unwrap());
        let from_file = |name: &str| format!("--from-file={name}={}", certs.join(name).display());
        self.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "berth-docker-tls",
            &from_file("ca.pem"),
            &from_file("cert.pem"),
            &from_file("key.pem"),
        ]);
        let mut secrets: Vec<String> = [
            "registry-username=unused",
            "registry-password=unused",
            "git-token=unused",
        ]
        .iter()
        .map(|literal| (*literal).to_string())
        .chain(literals.iter().cloned())
        .map(|literal| format!("--from-literal={literal}"))
        .collect();
        secrets.splice(
            0..0,
            ["create", "secret", "generic", "berth-secrets"].map(String::from),
        );
        self.kubectl_ok(&secrets.iter().map(String::as_str).collect::<Vec<_>>());

        let state = self.dir.path().join("node-state");
        let volume = format!("{}-state", self.prefix);
        let persistent_volume = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": volume, "labels": {"berth.dev/test": "true"}},
            "spec": {
                "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": volume, "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": state.to_str().unwrap(), "type": "DirectoryOrCreate"}
            }
        });

        // One JSON document per object; written back as one List.
        let listed = self.kubectl_ok(&[
            "create",
            "--dry-run=client",
            "-o",
            "json",
            "-f",
            root.join(file).to_str().unwrap(),
        ]);
        let items: Vec<Value> = serde_json::Deserializer::from_str(&listed)
            .into_iter::<Value>()
            .map(Result::unwrap)
            .collect();
        InCluster {
            image,
            state,
            volume,
            persistent_volume,
            manifests: json!({"apiVersion": "v1", "kind": "List", "items": items}),
        }
    }
}
