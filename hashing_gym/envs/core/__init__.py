"""The MDP cores: each environment's rules, written once over an array namespace (numpy or torch)."""
