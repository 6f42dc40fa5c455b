"""Connect, HELO, MAIL and RCPT checks: DNSBL zones, HELO and envelope checks, and the DNS client they share."""
