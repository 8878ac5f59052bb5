//! Temporary measurement (not kept).
use ferry_core::Store;
use ferry_store::{PostgresStore, SqliteStore, testkit};
use std::time::Instant;

async fn run(store: &dyn Store, n: usize) {
    let mut e = testkit::sample_execution("bench", "p", &ferry_core::new_time_id(), 1);
    store.create_execution(&e, None).await.unwrap();
    let t = Instant::now();
    for i in 0..n {
        e.stages[1].context.insert("i".into(), i.into());
        store.update_execution(&e, &[1], None).await.unwrap();
    }
    let el = t.elapsed();
    println!("{}: update_execution {:.0}/s ({:.3} ms each)", store.backend(), n as f64 / el.as_secs_f64(), el.as_secs_f64() * 1000.0 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        store.probe_write().await.unwrap();
    }
    let el = t.elapsed();
    println!("{}: probe_write {:.0}/s", store.backend(), n as f64 / el.as_secs_f64());
    let t = Instant::now();
    for _ in 0..n {
        store.get_execution(&e.id).await.unwrap().unwrap();
    }
    let el = t.elapsed();
    println!("{}: get_execution {:.0}/s", store.backend(), n as f64 / el.as_secs_f64());
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::to_string(&serde_json::to_value(&e).unwrap()).unwrap());
    }
    println!("encode whole execution via Value: {:.1} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("ferry.db")).await.unwrap();
    run(&s, 2000).await;
    let url = std::env::var("PG").unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
    let p = PostgresStore::connect(&url, 4).await.unwrap();
    run(&p, 2000).await;
}
