-- A user's membership history (the console's profile: GET /v1/users/{u}/changes) read by
-- index instead of scanning the environment's whole change log. One more btree insert per
-- recorded entry or exit.
CREATE INDEX membership_changes_user ON membership_changes (env_id, user_pk, id);
