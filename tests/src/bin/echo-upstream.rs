//! `echo-upstream`: the demo upstream for the docker-compose stack; answers every request with
//! JSON describing it (see `tests::echo`), or with `--websocket` accepts WebSocket upgrades and
//! echoes every frame back (see `tests::ws`).

use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "echo-upstream",
    about = "HTTP server that echoes each request back as JSON"
)]
struct Args {
    /// Address to listen on; repeat to serve several ports.
    #[arg(long, env = "ECHO_LISTEN", value_delimiter = ',', required = true)]
    listen: Vec<SocketAddr>,
    /// Accept WebSocket upgrades (on every path) and echo each text and binary frame back,
    /// instead of answering requests with JSON.
    #[arg(long, env = "ECHO_WEBSOCKET")]
    websocket: bool,
    /// Name reported in every answer (`"upstream"` field and `x-upstream` header).
    #[arg(long, env = "ECHO_NAME", default_value = "echo")]
    name: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut servers = tokio::task::JoinSet::new();
    for addr in args.listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let kind = if args.websocket {
            "WebSocket echo"
        } else {
            "echo"
        };
        eprintln!(
            "echo-upstream {:?} ({kind}) listening on {}",
            args.name,
            listener.local_addr()?
        );
        let name = args.name.clone();
        if args.websocket {
            servers.spawn(async move {
                tests::ws::serve_forever(listener).await;
                Ok(())
            });
        } else {
            servers.spawn(async move { tests::echo::serve_forever(listener, &name).await });
        }
    }
    // Docker stops containers with SIGTERM; a terminal sends SIGINT. Either ends the process.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        Some(res) = servers.join_next() => res??,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
