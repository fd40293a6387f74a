//! TLS: HTTPS on the client port (with and without client certificates),
//! mutual TLS between peers, a rogue node refused, and certificates
//! reloaded without a restart.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ballast_client::{Client, Error as ClientError};
use ballast_store::internals::{
    wire, FrameCaps, PeerIdentity, PeerRequest, PeerResponse, PeerTls, TlsFiles,
};
use ballast_store::Config;
use ballast_tests::pki::{Issued, TestCa};
use ballast_tests::TestCluster;
use openraft::async_runtime::watch::WatchReceiver;
use tracing::info;

/// Sets `c` up for HTTPS with client certificates from `ca` and mutual TLS
/// between peers with `node`'s certificate from `ca`.
fn use_tls(c: &mut Config, ca: &TestCa, node: &Issued, require_client_certs: bool) {
    c.tls_cert = Some(node.cert.clone());
    c.tls_key = Some(node.key.clone());
    c.tls_client_ca = require_client_certs.then(|| ca.ca_file.clone());
    c.peer_tls_cert = Some(node.cert.clone());
    c.peer_tls_key = Some(node.key.clone());
    c.peer_tls_ca = Some(ca.ca_file.clone());
}

fn https_endpoints(tc: &TestCluster) -> Vec<String> {
    tc.ids()
        .into_iter()
        .map(|id| format!("https://{}", tc.config(id).listen_client))
        .collect()
}

/// A client that tries each endpoint once, within a few seconds.
fn quick(endpoints: Vec<String>) -> ballast_client::ClientBuilder {
    Client::builder(endpoints)
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .retry_deadline(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_cluster_commits_and_clients_need_the_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "cluster")?;
    let node = ca.issue("node")?;
    let client_cert = ca.issue("client")?;
    let stranger = TestCa::new(dir.path(), "stranger")?;
    let stranger_client = stranger.issue("client")?;

    info!("--- a 3-node cluster: HTTPS with client certificates, mutual TLS between peers");
    let tc = TestCluster::start_with(3, |c| use_tls(c, &ca, &node, true)).await?;
    let leader = tc.wait_leader(Duration::from_secs(20)).await?;
    let endpoints = https_endpoints(&tc);
    let follower = tc.others(leader)[0];
    let follower_endpoint = format!("https://{}", tc.config(follower).listen_client);

    info!("--- a client with the CA and a client certificate writes through a follower");
    let client = quick(vec![follower_endpoint.clone()])
        .ca_file(&ca.ca_file)
        .client_identity_files(&client_cert.cert, &client_cert.key)
        .build()?;
    let put = client.put("tls/key", "over tls").await?;
    let all = quick(endpoints.clone())
        .ca_file(&ca.ca_file)
        .client_identity_files(&client_cert.cert, &client_cert.key)
        .build()?;
    let got = all.get("tls/key").await?;
    assert!(got.revision >= put.revision);
    assert_eq!(
        got.kv.as_ref().and_then(|kv| kv.value_str()),
        Some("over tls")
    );

    info!("--- a data-plane replica syncs over HTTPS with the CA and a client certificate");
    let replica = ballast_client::Replica::builder(endpoints.clone())
        .prefix("tls/")
        .tls(
            ballast_client::TlsOptions::new()
                .ca_file(&ca.ca_file)
                .identity_files(&client_cert.cert, &client_cert.key),
        )
        .start()
        .await?;
    assert_eq!(
        replica
            .get("tls/key")
            .as_deref()
            .and_then(|kv| kv.value_str()),
        Some("over tls")
    );
    let after = all.put("tls/after", "watched").await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.revision() < after.revision {
        if Instant::now() > deadline {
            bail!(
                "the replica's watch over HTTPS did not deliver revision {}",
                after.revision
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its bootstrap and its watch were told apart after the handshake and
    // served on the data plane's threads.
    let mut data_plane = 0;
    for id in tc.ids() {
        data_plane += tc.node(id)?.metrics().data_plane_connections.get();
    }
    assert!(data_plane >= 2, "data-plane connections: {data_plane}");
    replica.shutdown().await;

    info!("--- https without a CA is refused when the client is built");
    let no_ca = quick(endpoints.clone()).build();
    match no_ca {
        Err(ClientError::InvalidArgument(m)) => assert!(m.contains("CA"), "{m}"),
        other => bail!("expected InvalidArgument, got {other:?}"),
    }

    info!("--- a client trusting another CA cannot reach the cluster");
    let wrong_ca = quick(vec![follower_endpoint.clone()])
        .ca_file(&stranger.ca_file)
        .client_identity_files(&client_cert.cert, &client_cert.key)
        .max_attempts(1)
        .build()?;
    match wrong_ca.get("tls/key").await {
        Err(ClientError::Transport { message, .. }) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}")
        }
        other => bail!("expected a transport error, got {other:?}"),
    }

    info!("--- the right CA but no client certificate, or one from another CA: refused");
    for (what, builder) in [
        (
            "no client certificate",
            quick(vec![follower_endpoint.clone()]),
        ),
        (
            "a stranger's client certificate",
            quick(vec![follower_endpoint.clone()])
                .client_identity_files(&stranger_client.cert, &stranger_client.key),
        ),
    ] {
        let c = builder.ca_file(&ca.ca_file).max_attempts(1).build()?;
        let r = c.get("tls/key").await;
        assert!(
            matches!(r, Err(ClientError::Transport { .. })),
            "{what}: {r:?}"
        );
    }

    info!("--- plain HTTP to the HTTPS port gets no answer");
    let plain = tc
        .http()
        .get(format!(
            "http://{}/v1/status",
            tc.config(follower).listen_client
        ))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rogue_node_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "cluster")?;
    let node = ca.issue("node")?;
    let rogue_ca = TestCa::new(dir.path(), "rogue")?;
    let rogue = rogue_ca.issue("node")?;

    info!("--- a 3-node mutual-TLS cluster");
    let tc = TestCluster::start_with(3, |c| use_tls(c, &ca, &node, true)).await?;
    let leader = tc.wait_leader(Duration::from_secs(20)).await?;
    let term = tc
        .node(leader)?
        .raft()
        .metrics()
        .borrow_watched()
        .current_term;
    let cluster_id = tc.node(leader)?.cluster_id();
    let target = tc.others(leader)[0];
    let addr = tc.config(target).listen_peer.clone();
    let caps = FrameCaps::for_limits(&tc.config(target).limits());

    // The rogue trusts the cluster CA (so it could verify the cluster), but
    // its own certificate comes from another CA.
    let rogue_files = TlsFiles {
        cert: rogue.cert.clone(),
        key: rogue.key.clone(),
        ca: Some(ca.ca_file.clone()),
    };
    let honest_files = TlsFiles {
        cert: node.cert.clone(),
        key: node.key.clone(),
        ca: Some(ca.ca_file.clone()),
    };
    let ask = |tls: PeerTls, request: PeerRequest| {
        let addr = addr.clone();
        async move {
            let me = PeerIdentity {
                cluster_id,
                node_id: 9,
            };
            let timeout = Duration::from_secs(3);
            let mut conn = wire::connect_with(&addr, timeout, caps, &tls).await?;
            wire::call(&mut conn, &addr, me, target, &request, timeout).await
        }
    };

    info!("--- a peer with the cluster's certificate is answered");
    let hello = ask(PeerTls::mutual(honest_files)?, PeerRequest::Hello).await;
    assert!(matches!(hello, Ok(PeerResponse::Hello { .. })), "{hello:?}");

    info!("--- the rogue's Hello and its Vote for a far later term are refused");
    let rogue_tls = PeerTls::mutual(rogue_files)?;
    let hello = ask(rogue_tls.clone(), PeerRequest::Hello).await;
    assert!(hello.is_err(), "{hello:?}");
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(term + 100, 9), None);
    let voted = ask(rogue_tls.clone(), PeerRequest::Vote(vote)).await;
    assert!(voted.is_err(), "{voted:?}");
    info!("--- plain TCP to the peer port is refused too");
    let plain = ask(PeerTls::plain(), PeerRequest::Hello).await;
    assert!(plain.is_err(), "{plain:?}");

    info!("--- the rogue cannot join");
    let mut rogue_config = tc.config(1).clone();
    let joined = {
        let client = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        rogue_config.node_id = 9;
        rogue_config.data_dir = dir.path().join("rogue");
        rogue_config.listen_client = client.local_addr()?.to_string();
        rogue_config.listen_peer = peer.local_addr()?.to_string();
        rogue_config.initial_cluster = None;
        rogue_config.join = Some(https_endpoints(&tc).join(","));
        rogue_config.tls_cert = Some(rogue.cert.clone());
        rogue_config.tls_key = Some(rogue.key.clone());
        rogue_config.peer_tls_cert = Some(rogue.cert.clone());
        rogue_config.peer_tls_key = Some(rogue.key.clone());
        ballast_store::start(
            rogue_config,
            Some(ballast_store::Listeners { client, peer }),
        )
        .await
    };
    match joined {
        Ok(node) => {
            node.shutdown().await;
            bail!("the rogue node joined");
        }
        Err(e) => info!(error = %e, "rogue refused"),
    }

    info!("--- the cluster kept its leader and term, and still commits");
    assert_eq!(tc.wait_leader(Duration::from_secs(10)).await?, leader);
    assert_eq!(
        tc.node(leader)?
            .raft()
            .metrics()
            .borrow_watched()
            .current_term,
        term
    );
    let (_, learners) = tc.voters_and_learners(leader)?;
    assert!(learners.is_empty(), "learners: {learners:?}");
    let client_cert = ca.issue("client")?;
    let client = quick(https_endpoints(&tc))
        .ca_file(&ca.ca_file)
        .client_identity_files(&client_cert.cert, &client_cert.key)
        .build()?;
    client.put("after/rogue", "still here").await?;
    tc.shutdown().await;
    Ok(())
}

/// Waits until a new HTTPS connection to `endpoint` is served `want` (DER).
async fn wait_served(endpoint: &str, ca: &TestCa, want: &[u8]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A new client: a new connection, and so a new handshake.
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
                &ca.ca_file,
            )?)?)
            .tls_info(true)
            .timeout(Duration::from_secs(5))
            .build()?;
        let resp = http.get(format!("{endpoint}/v1/status")).send().await?;
        let served = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .context("TLS info")?
            .to_vec();
        if served == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the new certificate was not served within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_reload_when_their_files_change() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "cluster")?;
    let node = ca.issue("node")?;
    let tc = TestCluster::start_with(1, |c| {
        use_tls(c, &ca, &node, false);
        c.tls_reload_interval_ms = 200;
    })
    .await?;
    let endpoint = format!("https://{}", tc.config(1).listen_client);

    info!("--- rotate the certificate files: new connections get the new one");
    let rotated = ca.issue_into("node-rotated", &node)?;
    wait_served(&endpoint, &ca, &rotated).await?;

    info!("--- the node still serves writes after the rotation");
    let client = quick(vec![endpoint.clone()]).ca_file(&ca.ca_file).build()?;
    client.put("rotated", "yes").await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_the_certificates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "cluster")?;
    let node = ca.issue("node")?;
    // Polling an hour apart: only SIGHUP can reload within the test.
    let tc = TestCluster::start_with(1, |c| {
        use_tls(c, &ca, &node, false);
        c.tls_reload_interval_ms = 3_600_000;
    })
    .await?;
    let endpoint = format!("https://{}", tc.config(1).listen_client);

    info!("--- rotate, then SIGHUP this process");
    let rotated = ca.issue_into("node-rotated", &node)?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()?;
    assert!(status.success());
    wait_served(&endpoint, &ca, &rotated).await?;
    tc.shutdown().await;
    Ok(())
}
