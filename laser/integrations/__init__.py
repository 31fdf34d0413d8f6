"""The router where users train: adapters for other training frameworks (`laser.integrations.trl`: TRL's GRPO)."""
