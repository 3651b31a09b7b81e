"""What learns: reward models, preference and baseline agents, the agent protocol.

The agent registry lists the built-in agents by import path; importing this package
imports none of them (nor torch or stable-baselines3).
"""

from prefbench.agents.protocol import AGENTS, Agent, AgentSpec, Reporter, RunContext, register_agent

__all__ = ["AGENTS", "Agent", "AgentSpec", "Reporter", "RunContext", "register_agent"]
