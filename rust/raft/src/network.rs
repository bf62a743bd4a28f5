//! Raft messages between meta nodes over tarpc (bincode over TCP), with the deadlines
//! openraft asks for on each call.

use std::net::SocketAddr;

use futures::{future, StreamExt};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use tarpc::context::Context;
use tarpc::server::incoming::Incoming;
use tarpc::server::BaseChannel;
use tarpc::tokio_serde::formats::Bincode;

use crate::{NodeId, TypeConfig};

/// Largest Raft message (snapshots travel in chunks of openraft's choosing).
const MAX_FRAME: usize = 256 << 20;

#[tarpc::service]
pub trait RaftRpc {
    async fn append_entries(
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
    async fn install_snapshot(
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;
    async fn vote(req: VoteRequest<NodeId>) -> Result<VoteResponse<NodeId>, RaftError<NodeId>>;
}

#[derive(Clone)]
struct RaftServer(Raft<TypeConfig>);

impl RaftRpc for RaftServer {
    async fn append_entries(
        self,
        _: Context,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.0.append_entries(req).await
    }

    async fn install_snapshot(
        self,
        _: Context,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.0.install_snapshot(req).await
    }

    async fn vote(
        self,
        _: Context,
        req: VoteRequest<NodeId>,
    ) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.0.vote(req).await
    }
}

/// Serves Raft messages for `raft` on `addr` (port 0 picks one); returns the bound
/// address and the serving task.
pub async fn start(
    addr: SocketAddr,
    raft: Raft<TypeConfig>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut incoming = tarpc::serde_transport::tcp::listen(addr, Bincode::default).await?;
    incoming.config_mut().max_frame_length(MAX_FRAME);
    let bound = incoming.local_addr();
    let server = RaftServer(raft);
    let task = tokio::spawn(
        incoming
            .filter_map(|r| future::ready(r.ok()))
            .map(|t| {
                let _ = t.get_ref().set_nodelay(true);
                BaseChannel::with_defaults(t)
            })
            .execute(server.serve())
            .for_each(|channel| async {
                tokio::spawn(channel.for_each(|response| async {
                    tokio::spawn(response);
                }));
            }),
    );
    Ok((bound, task))
}

/// Makes a connection per peer, lazily, and again after a failure.
#[derive(Clone, Default)]
pub struct Network;

pub struct Peer {
    target: NodeId,
    addr: String,
    client: Option<RaftRpcClient>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            client: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl Peer {
    async fn client<E: std::error::Error>(
        &mut self,
    ) -> Result<RaftRpcClient, RPCError<NodeId, BasicNode, E>> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let addr: SocketAddr = self
            .addr
            .parse()
            .map_err(|e: std::net::AddrParseError| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut connect = tarpc::serde_transport::tcp::connect(addr, Bincode::default);
        connect.config_mut().max_frame_length(MAX_FRAME);
        let transport = connect
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let _ = transport.get_ref().set_nodelay(true);
        let client = RaftRpcClient::new(tarpc::client::Config::default(), transport).spawn();
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Maps a failed call, and drops the connection so the next call reconnects.
    fn failed<E: std::error::Error>(
        &mut self,
        e: tarpc::client::RpcError,
    ) -> RPCError<NodeId, BasicNode, E> {
        self.client = None;
        RPCError::Network(NetworkError::new(&Failure(e.to_string())))
    }
}

fn context(option: &RPCOption) -> Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + option.hard_ttl();
    ctx
}

macro_rules! call {
    ($self:ident, $option:ident, $method:ident, $req:ident) => {{
        let client = $self.client().await?;
        match client.$method(context(&$option), $req).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new($self.target, e))),
            Err(e) => Err($self.failed(e)),
        }
    }};
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        call!(self, option, append_entries, req)
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        call!(self, option, install_snapshot, req)
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        call!(self, option, vote, req)
    }
}
