"""The self-service web for device owners: sign up, claim a device, block senders, see messages and usage."""
