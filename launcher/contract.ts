/**
 * torchrun's environment contract: the variables every rank of a DDP job reads to learn who it is (RANK,
 * LOCAL_RANK), how many there are (WORLD_SIZE) and where to meet (MASTER_ADDR:MASTER_PORT). A rank started
 * by this launcher or by `torchrun --no-python` cannot tell the difference; tests/e2e/launch_test.ts
 * compares the two.
 * @module
 */

/** Variables every rank gets from the launcher (and from torchrun: see tests/e2e/launch_test.ts). */
export const CONTRACT_KEYS: readonly string[] = [
  "RANK",
  "LOCAL_RANK",
  "WORLD_SIZE",
  "LOCAL_WORLD_SIZE",
  "GROUP_RANK",
  "GROUP_WORLD_SIZE",
  "ROLE_RANK",
  "ROLE_NAME",
  "ROLE_WORLD_SIZE",
  "MASTER_ADDR",
  "MASTER_PORT",
  "TORCHELASTIC_RUN_ID",
  "TORCHELASTIC_RESTART_COUNT",
  "TORCHELASTIC_MAX_RESTARTS",
  "TORCHELASTIC_USE_AGENT_STORE",
  "TORCH_NCCL_ASYNC_ERROR_HANDLING",
];

/** The rank-independent part of the contract, as {@link rankEnv} takes it. */
export interface JobShape {
  /** Ranks per node (LOCAL_WORLD_SIZE). */
  nprocPerNode: number;
  /** Nodes (GROUP_WORLD_SIZE). */
  nnodes: number;
  /** This node's index (GROUP_RANK). */
  nodeRank: number;
  /** MASTER_ADDR. */
  masterAddr: string;
  /** MASTER_PORT. */
  masterPort: number;
  /** TORCHELASTIC_RUN_ID. Default "none", as torchrun's static rendezvous. */
  runId?: string;
}

/**
 * The variables torchrun gives local rank `localRank` (global rank = nodeRank × nprocPerNode + localRank),
 * except TORCHELASTIC_USE_AGENT_STORE, which is "False": no agent hosts a TCPStore here, rank 0 does (under
 * torchrun, "True": every rank is a client). `parentEnv` supplies TORCH_NCCL_ASYNC_ERROR_HANDLING when set,
 * as torchrun does.
 */
export function rankEnv(
  job: JobShape,
  localRank: number,
  parentEnv: Record<string, string> = Deno.env.toObject(),
): Record<string, string> {
  const worldSize = job.nnodes * job.nprocPerNode;
  const rank = job.nodeRank * job.nprocPerNode + localRank;
  return {
    RANK: String(rank),
    LOCAL_RANK: String(localRank),
    WORLD_SIZE: String(worldSize),
    LOCAL_WORLD_SIZE: String(job.nprocPerNode),
    GROUP_RANK: String(job.nodeRank),
    GROUP_WORLD_SIZE: String(job.nnodes),
    ROLE_RANK: String(rank),
    ROLE_NAME: "default",
    ROLE_WORLD_SIZE: String(worldSize),
    MASTER_ADDR: job.masterAddr,
    MASTER_PORT: String(job.masterPort),
    TORCHELASTIC_RUN_ID: job.runId ?? "none",
    TORCHELASTIC_RESTART_COUNT: "0",
    TORCHELASTIC_MAX_RESTARTS: "0",
    TORCHELASTIC_USE_AGENT_STORE: "False",
    TORCH_NCCL_ASYNC_ERROR_HANDLING: parentEnv.TORCH_NCCL_ASYNC_ERROR_HANDLING ?? "1",
  };
}
