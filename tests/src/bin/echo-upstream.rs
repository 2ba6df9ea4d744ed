//! `echo-upstream`: the demo upstream for the docker-compose stack; answers every request with
//! JSON describing it (see `tests::echo`).

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
        eprintln!(
            "echo-upstream {:?} listening on {}",
            args.name,
            listener.local_addr()?
        );
        let name = args.name.clone();
        servers.spawn(async move { tests::echo::serve_forever(listener, &name).await });
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
