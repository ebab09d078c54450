"""Who our users are: users (mailboxes, Twilio numbers), their devices and blocked senders."""
