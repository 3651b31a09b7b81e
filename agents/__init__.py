"""What learns: reward models, preference and baseline agents, the agent protocol.

Importing this package registers the built-in agents.
"""

from prefbench.agents import baselines, preference  # noqa: F401  (registers agents)
from prefbench.agents.protocol import AGENTS, Agent, AgentSpec, Reporter, RunContext, register_agent

__all__ = ["AGENTS", "Agent", "AgentSpec", "Reporter", "RunContext", "register_agent"]
