//! Raft messages to the other meta nodes: the same tarpc service (and port) clients
//! use, with the deadline openraft gives each call.

use std::net::SocketAddr;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tarpc::context::Context;
use tarpc::tokio_serde::formats::Bincode;

use memcache_proto::{MetaRpcClient, MAX_FRAME};
use memcache_raft::{NodeId, TypeConfig};

/// Makes a connection per peer, lazily, and again after a failure.
#[derive(Clone, Default)]
pub struct Network;

pub struct Peer {
    target: NodeId,
    addr: String,
    client: Option<MetaRpcClient>,
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
    ) -> Result<MetaRpcClient, RPCError<NodeId, BasicNode, E>> {
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
        let client = MetaRpcClient::new(tarpc::client::Config::default(), transport).spawn();
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
        call!(self, option, raft_append, req)
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        call!(self, option, raft_snapshot, req)
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        call!(self, option, raft_vote, req)
    }
}
