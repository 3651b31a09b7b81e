"""Offline learners: policies trained on a fixed dataset of episodes, no environment steps."""
