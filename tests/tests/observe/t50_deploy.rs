//! The deployment artefacts in `deploy/`: what can be checked without a
//! container runtime, systemd or a Kubernetes cluster. The manifests are
//! parsed and held to their invariants, and the command lines they run are
//! given to the real `ballastd --check-config`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use yaml_rust2::{Yaml, YamlLoader};

static BUILD: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(repo().join(path)).with_context(|| format!("reading {path}"))
}

/// `target/<profile>/ballastd`, built first if missing.
fn ballastd() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test path {}", exe.display()))?;
    let path = profile_dir.join("ballastd");
    let _guard = BUILD.lock().map_err(|_| anyhow!("build lock poisoned"))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Always through cargo: a stale binary would not know --check-config.
    let status = Command::new(cargo)
        .args(["build", "-p", "ballast-store", "--bin", "ballastd"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("building ballastd")?;
    if !status.success() || !path.exists() {
        bail!("could not build ballastd at {}", path.display());
    }
    Ok(path)
}

/// Runs `sh -c script` with only `env` set; returns (success, stdout+stderr).
fn sh(script: &str, env: &[(&str, &str)]) -> Result<(bool, String)> {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn find<'a>(docs: &'a [Yaml], kind: &str) -> Result<&'a Yaml> {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .ok_or_else(|| anyhow!("no {kind} in deploy/k8s/ballast.yaml"))
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> Result<&'a str> {
    y.as_str().ok_or_else(|| anyhow!("{what} is not a string"))
}

#[test]
fn kubernetes_manifests_hold_their_invariants_and_their_command_line_validates() -> Result<()> {
    let docs = YamlLoader::load_from_str(&read("deploy/k8s/ballast.yaml")?)?;
    let svc = find(&docs, "Service")?;
    let sts = find(&docs, "StatefulSet")?;
    let pdb = find(&docs, "PodDisruptionBudget")?;
    let svc_name = str_of(&svc["metadata"]["name"], "service name")?;
    let sts_name = str_of(&sts["metadata"]["name"], "statefulset name")?;

    // Headless, resolvable before ready, both ports.
    assert_eq!(svc["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        svc["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    let ports: Vec<i64> = svc["spec"]["ports"]
        .as_vec()
        .context("service ports")?
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, vec![2379, 2380]);

    // Stable identities through the headless service, started together.
    let spec = &sts["spec"];
    assert_eq!(spec["serviceName"].as_str(), Some(svc_name));
    let replicas = spec["replicas"].as_i64().context("replicas")?;
    assert!(replicas >= 3 && replicas % 2 == 1, "{replicas} members");
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    let labels = &spec["template"]["metadata"]["labels"];
    for (selector, what) in [
        (&spec["selector"]["matchLabels"], "statefulset"),
        (&svc["spec"]["selector"], "service"),
        (&pdb["spec"]["selector"]["matchLabels"], "disruption budget"),
    ] {
        let map = selector.as_hash().context("selector")?;
        for (k, v) in map {
            assert_eq!(
                &labels[str_of(k, "label")?],
                v,
                "the {what} selector misses the pods"
            );
        }
    }

    // One volume per member, mounted where the data directory is.
    let claims = spec["volumeClaimTemplates"]
        .as_vec()
        .context("volume claims")?;
    assert_eq!(claims.len(), 1);
    let claim = str_of(&claims[0]["metadata"]["name"], "claim name")?;
    let container = &spec["template"]["spec"]["containers"][0];
    let mounts = container["volumeMounts"].as_vec().context("mounts")?;
    let mount = mounts
        .iter()
        .find(|m| m["name"].as_str() == Some(claim))
        .context("the claim is not mounted")?;
    let mount_path = str_of(&mount["mountPath"], "mount path")?;
    let env: Vec<(String, String)> = container["env"]
        .as_vec()
        .context("env")?
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect();
    let data_dir = env
        .iter()
        .find(|(k, _)| k == "BALLAST_DATA_DIR")
        .map(|(_, v)| v.clone())
        .context("BALLAST_DATA_DIR")?;
    assert!(
        data_dir.starts_with(mount_path),
        "{data_dir} is not on the volume"
    );

    // Readiness from /health/ready, liveness from /health/live.
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/health/ready")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/health/live")
    );

    // Voluntary disruptions never take a quorum.
    let max_unavailable = pdb["spec"]["maxUnavailable"]
        .as_i64()
        .context("maxUnavailable")?;
    assert!(max_unavailable <= (replicas - 1) / 2);

    // The container's command line, run for every pod with the real binary.
    let script = str_of(&container["args"][0], "args")?;
    let bin = ballastd()?;
    let script = script
        .trim_end()
        .replace("/usr/local/bin/ballastd", &bin.to_string_lossy())
        + " --check-config";
    for ordinal in 0..replicas {
        let host = format!("{sts_name}-{ordinal}");
        let mut vars: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        vars.push(("HOSTNAME", &host));
        vars.push(("POD_NAMESPACE", "config"));
        let (ok, out) = sh(&script, &vars)?;
        assert!(ok, "pod {host}: {out}");
        let fqdn = format!("{host}.{svc_name}.config.svc.cluster.local");
        assert!(out.contains(&format!("node {} ", ordinal + 1)), "{out}");
        assert!(out.contains(&format!("(advertised {fqdn}:2380)")), "{out}");
        for i in 0..replicas {
            let peer = format!(
                "initial member {}: client {sts_name}-{i}.{svc_name}.config.svc.cluster.local:2379",
                i + 1
            );
            assert!(out.contains(&peer), "{out}");
        }
    }
    Ok(())
}

#[test]
fn systemd_unit_command_lines_validate_with_the_example_config() -> Result<()> {
    let unit = read("deploy/ballastd.service")?;
    let bin = ballastd()?;
    let example = repo().join("deploy/ballastd.toml");
    let mut seen = 0;
    for key in ["ExecStartPre=", "ExecStart="] {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in the unit"))?;
        assert!(line.starts_with("/usr/local/bin/ballastd "), "{line}");
        let line = line
            .replace("/usr/local/bin/ballastd", &bin.to_string_lossy())
            .replace("/etc/ballast/ballastd.toml", &example.to_string_lossy());
        let line = if line.contains("--check-config") {
            line
        } else {
            line + " --check-config"
        };
        let (ok, out) = sh(&line, &[])?;
        assert!(ok, "{key}{line}: {out}");
        assert!(out.contains("configuration valid: node 1"), "{out}");
        seen += 1;
    }
    assert_eq!(seen, 2);
    for needed in [
        "User=ballast",
        "StateDirectory=ballast",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.lines().any(|l| l == needed), "the unit lacks {needed}");
    }
    // A bad setting is refused, with exit code 2.
    let bad = Command::new(&bin)
        .args(["--node-id", "0", "--check-config"])
        .output()?;
    assert_eq!(bad.status.code(), Some(2));
    Ok(())
}

#[test]
fn dockerfile_is_multi_stage_with_both_binaries_on_a_small_base() -> Result<()> {
    let text = read("deploy/Dockerfile")?;
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    let last = froms.last().copied().unwrap_or_default();
    assert!(
        last.contains("-slim") || last.contains("distroless"),
        "final base {last}"
    );
    let final_stage = text.rsplit_once(last).map(|(_, s)| s).unwrap_or_default();
    for bin in ["ballastd", "ballastctl"] {
        assert!(
            final_stage
                .lines()
                .any(|l| l.starts_with("COPY --from=") && l.contains(&format!("/{bin} "))),
            "{bin} is not copied into the final image"
        );
    }
    assert!(final_stage
        .lines()
        .any(|l| l.starts_with("USER ") && !l.contains("root")));
    assert!(final_stage.contains("EXPOSE 2379 2380"));
    assert!(final_stage.contains("ENTRYPOINT [\"/usr/local/bin/ballastd\"]"));
    // The build is the release build of `make release`: a current RocksDB
    // compiled from source in release mode.
    let build_stage = text.split_once(last).map(|(b, _)| b).unwrap_or_default();
    // The RUN instruction with its continuation lines joined.
    let run = build_stage
        .replace("\\\n", " ")
        .lines()
        .find(|l| l.starts_with("RUN ") && l.contains("scripts/release.sh"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        !run.is_empty(),
        "the build stage does not run scripts/release.sh"
    );
    // RocksDB is compiled once: the target directory (and cargo's registry)
    // live in BuildKit cache mounts, which need the dockerfile syntax line.
    assert!(text.starts_with("# syntax=docker/dockerfile:1\n"));
    for cache in ["/src/target", "/usr/local/cargo/registry"] {
        assert!(
            run.contains(&format!("--mount=type=cache,target={cache} ")),
            "no cache mount for {cache}: {run}"
        );
    }
    for bin in ["ballastd", "ballastctl"] {
        assert!(
            run.contains(&format!("target/bundled/release/{bin} ")),
            "{bin} is not copied out of the cached target directory: {run}"
        );
        assert!(
            final_stage.contains(&format!("COPY --from=build /out/{bin} ")),
            "{bin} is not taken from the release build's output"
        );
    }
    // The build context leaves build output and data out.
    let ignore = read(".dockerignore")?;
    for path in ["/target", "/data", "/.git"] {
        assert!(
            ignore.lines().any(|l| l.trim() == path),
            ".dockerignore does not leave out {path}"
        );
    }
    let script = read("scripts/release.sh")?;
    assert!(script.contains("export BALLAST_ROCKSDB=bundled"));
    assert!(script.contains("cargo build --release --locked"));
    // Every BALLAST_ variable the image sets is one ballastd reads.
    let help = Command::new(ballastd()?).arg("--help").output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "BALLAST_DATA_DIR",
        "BALLAST_LISTEN_CLIENT",
        "BALLAST_LISTEN_PEER",
    ] {
        assert!(final_stage.contains(&format!("{var}=")), "{var}");
        assert!(help.contains(var), "ballastd does not read {var}");
    }
    Ok(())
}

/// The release pin: Cargo.toml's `[workspace.metadata.release]` names a
/// newer `rocksdb` crate than the development pin (`scripts/release.sh
/// --print-pin` reads it there), and `scripts/release.sh` builds a copy of
/// the workspace where that pin replaces the development one and nothing
/// else changed.
#[test]
fn release_script_swaps_in_the_release_rocksdb_pin_in_a_copy() -> Result<()> {
    let manifest = read("Cargo.toml")?;
    let dev_pin = manifest
        .lines()
        .find(|l| l.starts_with("rocksdb = { version = \"="))
        .ok_or_else(|| anyhow!("no development rocksdb pin"))?;
    let target = tempfile::tempdir()?;
    // `scripts/release.sh ARG` with its target directory under `target`;
    // its standard output.
    let release_script = |arg: &str| -> Result<String> {
        let out = Command::new("bash")
            .arg(repo().join("scripts/release.sh"))
            .arg(arg)
            .env("CARGO_TARGET_DIR", target.path())
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() {
            bail!(
                "release.sh {arg}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    };
    let release_pin = format!("rocksdb = {}", release_script("--print-pin")?);
    let release_pin = release_pin.as_str();
    let (_, release_section) = manifest
        .split_once("\n[workspace.metadata.release]\n")
        .ok_or_else(|| anyhow!("no [workspace.metadata.release]"))?;
    assert!(
        release_section.lines().any(|l| l == release_pin),
        "{release_pin}"
    );
    let version = |pin: &str| -> Result<Vec<u64>> {
        let v = pin
            .split("version = \"=")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or_else(|| anyhow!("no exact version in {pin}"))?;
        v.split('.')
            .map(|p| p.parse().with_context(|| format!("version {v}")))
            .collect()
    };
    assert!(
        version(release_pin)? > version(dev_pin)?,
        "the release pin {release_pin} is not newer than {dev_pin}"
    );
    // Snappy is RocksDB's default compression, which data written by
    // development builds uses: a release build must read it.
    assert!(release_pin.contains("\"snappy\""), "{release_pin}");

    let copy = PathBuf::from(release_script("--prepare-only")?);
    assert_eq!(copy, target.path().join("bundled/workspace"));
    let copied = std::fs::read_to_string(copy.join("Cargo.toml"))?;
    let expected = manifest.replacen(dev_pin, release_pin, 1);
    assert_eq!(copied, expected, "the copy differs by more than the pin");
    for file in ["Cargo.lock", "store/src/lib.rs", "client/src/lib.rs"] {
        assert_eq!(
            std::fs::read(copy.join(file))?,
            std::fs::read(repo().join(file))?,
            "{file}"
        );
    }
    Ok(())
}
