//! The control-plane `Client` against a real cluster: any endpoint works,
//! followers forward, and the client moves past a dead node.

use std::time::Duration;

use anyhow::Result;
use ballast_client::{Client, Compare, CompareOp, Txn, TxnOp};
use ballast_tests::TestCluster;
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_writes_through_any_node_and_survives_a_dead_endpoint() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");

    info!("--- a client that only knows a follower writes and reads");
    let only_follower = Client::new(vec![tc.endpoint(follower)])?;
    let put = only_follower.put("/services/api/timeout", "250ms").await?;
    let got = only_follower.get("/services/api/timeout").await?;
    assert_eq!(got.kv.map(|kv| kv.value), Some(b"250ms".to_vec()));
    assert!(got.revision >= put.revision);

    info!("--- compare-and-swap and a txn through the follower");
    let cas = only_follower
        .compare_and_swap("/app/mode", None, "green")
        .await?;
    assert!(cas.succeeded);
    let again = only_follower
        .compare_and_swap("/app/mode", None, "red")
        .await?;
    assert!(!again.succeeded);
    let txn = Txn::new()
        .when(vec![Compare::value("/app/mode", CompareOp::Equal, "green")])
        .and_then(vec![TxnOp::put("/app/mode", "blue")])
        .or_else(vec![TxnOp::get("/app/mode")]);
    assert!(only_follower.txn(txn).await?.succeeded);

    info!("--- kill the first endpoint's node; a client listing all nodes carries on");
    let endpoints: Vec<String> = tc.ids().iter().map(|id| tc.endpoint(*id)).collect();
    let client = Client::builder(endpoints)
        .request_timeout(Duration::from_secs(4))
        .build()?;
    tc.kill(1).await?;
    tc.wait_leader(Duration::from_secs(15)).await?;
    let mut ok = false;
    for _ in 0..50 {
        match client.put("/app/mode", "after-kill").await {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(e) if e.is_definitely_not_applied() => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert!(ok, "the client wrote after node 1 died");
    let got = client.get("/app/mode").await?;
    assert_eq!(got.kv.map(|kv| kv.value), Some(b"after-kill".to_vec()));
    tc.shutdown().await;
    Ok(())
}

mod t20_watch;
mod t30_indeterminate;
mod t40_exactly_once;
mod t50_endpoint_sync;
