-- Imports of users and members apply each window of rows in lanes, on as many connections at
-- once: a user's rows all go to one lane (by a hash of the userId), and each lane commits on
-- its own. `lanes_done` has a bit per lane of the current window already committed (its rows
-- and counts), `lane_window` the window's size; the last lane to commit moves `rows_done` past
-- the window and clears both. A resumed import reads the same window and skips those lanes.
ALTER TABLE imports
    ADD COLUMN lanes_done  smallint NOT NULL DEFAULT 0,
    ADD COLUMN lane_window integer NOT NULL DEFAULT 0;
