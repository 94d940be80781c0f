-- What an operator's figures read (shared/backlog.py, `segments status`, admin's /metrics):
-- dead letters of the last day and webhook deliveries given up in the last day, found by
-- index rather than by scanning tables that only grow. Both sets are rare by design.
CREATE INDEX dead_letters_at ON dead_letters (at);
-- (a delivery given up has its last attempt's next_attempt_at: within an hour of giving up)
CREATE INDEX webhook_deliveries_gave_up ON webhook_deliveries (next_attempt_at)
    WHERE status = 'failed';
