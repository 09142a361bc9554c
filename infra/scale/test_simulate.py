"""Tests for simulate.py: python3 -m unittest discover -s infra/scale"""

import io
import math
import unittest
from contextlib import redirect_stdout
from dataclasses import replace

import simulate as sim

P = sim.Params()
OLD = sim.previous_loop(P)
PR = sim.Prices()


def usage(p, interval):
    return sim.usage_per_turn_minute(p, interval)


class TransitionTest(unittest.TestCase):
    def test_token_loop_makes_two_transitions_per_normal_cycle(self):
        # A normal cycle enters Poll, then NextPoll (its States.Timeout Catch cannot name Poll
        # itself in moto): halving the cycles (1 s -> 2 s) removes two transitions per cycle removed.
        self.assertEqual(usage(P, 1).transitions - usage(P, 2).transitions, 2 * (60 - 30))

    def test_token_loop_per_turn_extras(self):
        # 60 Polls and 59 NextPolls (the Poll the checker answers goes to the Choice instead)
        # + start and end (2) + StartWorker (1) + the Choice after it answers the token (1).
        self.assertEqual(usage(P, 1).transitions, 60 + 59 + 2 + 1 + 1)

    def test_previous_loop_makes_three_transitions_per_cycle(self):
        # Wait, Poll, Choice every cycle; the end needs no extra Choice; StartWorker as today.
        self.assertEqual(usage(OLD, 1).transitions, 3 * 60 + 2 + 1)
        self.assertEqual(usage(OLD, 1).transitions - usage(OLD, 2).transitions, 3 * 30)

    def test_a_catch_straight_back_into_poll_would_make_one_transition_a_cycle(self):
        # The lever AWS allows and moto does not: no NextPoll, 60 Polls + 2 + 1 + the Choice.
        self.assertEqual(usage(replace(P, transitions_per_token_cycle=1), 1).transitions, 60 + 2 + 1 + 1)

    def test_start_end_share_shrinks_with_longer_turns(self):
        # 2 a cycle; the 3 a turn (start and end, StartWorker, the Choice in place of the last
        # NextPoll) are halved.
        two_minute_turn = replace(P, turn_seconds=120)
        self.assertEqual(usage(two_minute_turn, 1).transitions, 2 * 60 + 3 / 2)

    def test_a_cancel_adds_the_wake_up_choice_and_one_poll(self):
        # Token loop: SendTaskSuccess from the cancel -> Choice -> Poll again (its checker
        # ends the run; no NextPoll on that path). The previous loop just sees the stamp at its
        # next regular cycle.
        cancelled = replace(P, cancelled_share=1.0)
        self.assertEqual(usage(cancelled, 1).transitions - usage(P, 1).transitions, 2)
        self.assertEqual(usage(sim.previous_loop(cancelled), 1).transitions, usage(OLD, 1).transitions)


class TokenTest(unittest.TestCase):
    def test_one_send_task_success_per_turn_and_one_more_per_cancel(self):
        self.assertEqual(usage(P, 2).send_task_success, 1)
        self.assertEqual(usage(replace(P, cancelled_share=1.0), 2).send_task_success, 2)
        self.assertEqual(usage(replace(P, cancelled_share=0.1), 2).send_task_success, 1.1)
        self.assertEqual(usage(OLD, 2).send_task_success, 0)

    def test_the_stored_token_takes_the_session_item_past_one_kilobyte(self):
        # ~680 B of token on a 0.6-1 KB item: every write of the item during a turn is 2 WRU.
        for base in (600, 700, 1000):
            p = replace(P, session_item_bytes=base)
            self.assertGreater(sim.session_item_bytes_in_run(p), 1024)
            self.assertEqual(sim.write_units(sim.session_item_bytes_in_run(p)), 2)
            self.assertEqual(sim.write_units(sim.session_item_bytes_in_run(sim.previous_loop(p))), 1)
        self.assertEqual(sim.write_units(sim.session_item_bytes_in_run(replace(P, token_item="own"))), 1)

    def test_after_a_cancel_three_writes_see_both_copies_of_the_token(self):
        # cancel_saw_poll_token (~700 B) takes the item past 2 KB until the termination removes
        # it: the stamp (sized by the item after it), the woken poll and the termination
        # transaction cost 3, 3 and 6 WRU instead of 2, 2 and 4 (the status_idle it replaces).
        self.assertEqual(sim.write_units(sim.session_item_bytes_after_cancel(P)), 3)
        cancelled = replace(P, cancelled_share=1.0)
        self.assertEqual(usage(cancelled, 1).wru_session_item - usage(P, 1).wru_session_item, 3 + 3 + 6 - 4)
        self.assertEqual(sim.write_units(sim.session_item_bytes_after_cancel(replace(P, token_item="own"))), 1)

    def test_no_session_reads_in_the_token_loop(self):
        # The checker's UpdateItem (ReturnValues ALL_NEW) replaces the consistent GetItem.
        for interval in sim.INTERVALS:
            self.assertEqual(usage(P, interval).rru_sessions, 0)
            self.assertAlmostEqual(usage(OLD, interval).rru_sessions, 60 / interval)


class UsageTest(unittest.TestCase):
    def test_one_checker_invocation_per_cycle(self):
        for interval in sim.INTERVALS:
            self.assertAlmostEqual(usage(P, interval).poll_invocations, 60 / interval)

    def test_one_worker_per_turn_billed_for_the_whole_turn(self):
        u = usage(P, 1)
        self.assertEqual(u.worker_invocations, 1)
        self.assertAlmostEqual(u.worker_gb_s, 60 * 256 / 1024)  # 15 GB-s
        self.assertEqual(u.lambda_invocations, 60 + 1 + 1)  # checker, worker, create-session API

    def test_heartbeats_every_half_interval_unless_a_flush_replaces_them(self):
        # Text streams the whole turn: an event every 2 s. A heartbeat due at exactly 2 s fires
        # before the flush (which waits for the next token), so at 1 and 2 s the lease is still
        # renewed every half interval; at 5 s (every 2.5 s) the flushes replace every heartbeat.
        self.assertEqual(sim.heartbeats_per_turn(P, 1), 120)
        self.assertEqual(sim.heartbeats_per_turn(P, 2), 60)
        self.assertEqual(sim.heartbeats_per_turn(P, 5), 0)
        self.assertEqual(sim.heartbeats_per_turn(replace(P, stream_share=0.0), 5), 24)

    def test_session_item_writes_at_one_second(self):
        u = usage(P, 1)
        expected = (
            2  # create: the session item in a transaction, < 1 KB before any token
            + 60 * 2  # the checker notes its token every cycle, item > 1 KB
            + (120 + 2 + 2) * 2  # heartbeats, claim + finish, token usage of 2 model calls
            + 30 * 4  # the session update in each event's transaction
            + 4  # the checker's status_idle transaction
        )
        self.assertEqual(u.wru_session_item, expected)
        self.assertEqual(u.wru_token_item, 0)

    def test_event_writes_do_not_depend_on_the_interval(self):
        # opening user_message + 30 flushes + status_idle, each 2 WRU (transactional, <= 1 KB).
        for interval in sim.INTERVALS:
            self.assertEqual(usage(P, interval).wru_events, (1 + 30 + 1) * 2)
            self.assertEqual(usage(P, interval).wru_ratelimits, 4)

    def test_a_larger_event_item_doubles_its_write_units(self):
        fast_stream = replace(P, event_item_bytes=1100)
        self.assertEqual(usage(fast_stream, 1).wru_events, 2 * usage(P, 1).wru_events)

    def test_express_bills_the_whole_turn_in_64_mb_chunks(self):
        self.assertAlmostEqual(usage(OLD, 1).express_gb_s, 60 * 64 / 1024)
        self.assertAlmostEqual(sim.express_billed_gb(replace(P, express_memory_mb=65)), 128 / 1024)
        self.assertAlmostEqual(sim.express_billed_seconds(replace(P, turn_seconds=60.01)), 60.1)

    def test_batching_divides_the_loop_but_not_the_reads(self):
        # One batch token item written per cycle; every session still read each cycle.
        batched = usage(replace(P, token_item="own", batch_size=10), 1)
        self.assertAlmostEqual(batched.poll_invocations, 6)
        self.assertAlmostEqual(batched.transitions, 2 * 6 + 3)
        self.assertAlmostEqual(batched.rru_sessions, 60)
        self.assertAlmostEqual(batched.wru_token_item, 6)

    def test_adaptive_mix_lies_between_its_two_intervals(self):
        fast, slow = usage(P, 1), usage(P, 5)
        mix = sim.blended_usage(P, 1, 5, 0.25)
        self.assertAlmostEqual(mix.transitions, 0.25 * fast.transitions + 0.75 * slow.transitions)
        self.assertLess(slow.transitions, mix.transitions)
        self.assertLess(mix.transitions, fast.transitions)
        self.assertAlmostEqual(mix.wru_events, fast.wru_events)


class CostTest(unittest.TestCase):
    def test_standard_cost_decreases_as_the_interval_grows(self):
        costs = [sim.cost_standard(usage(P, i), PR)["total"] for i in sim.INTERVALS]
        self.assertEqual(costs, sorted(costs, reverse=True))

    def test_token_loop_costs_73_to_81_percent_of_the_previous_loop(self):
        # A third of the transitions go (2 a cycle instead of 3); the dearer session writes
        # take back a little.
        for interval, share in ((1, 0.73), (2, 0.76), (5, 0.81)):
            new = sim.cost_standard(usage(P, interval), PR)["total"]
            old = sim.cost_standard(usage(OLD, interval), PR)["total"]
            self.assertAlmostEqual(new / old, share, delta=0.005)

    def test_the_worker_dominates_the_lambda_cost(self):
        # 15 GB-s of waiting on the model vs 15 ms per checker poll.
        for interval in sim.INTERVALS:
            u = usage(P, interval)
            self.assertGreater(sim.worker_cost(u, PR) / sim.cost_standard(u, PR)["lambda"], 0.9)
        self.assertAlmostEqual(sim.worker_cost(usage(P, 1), PR), 1e-6 * 0.2 + 15 * 0.0000133334)

    def test_step_functions_is_still_the_largest_part_of_standard(self):
        for interval in sim.INTERVALS:
            c = sim.cost_standard(usage(P, interval), PR)
            self.assertGreater(c["step_functions"], max(c["lambda"], c["dynamodb"]))

    def test_express_is_cheaper_than_standard_at_every_interval(self):
        for interval in sim.INTERVALS:
            std = sim.cost_standard(usage(P, interval), PR)["total"]
            exp = sim.cost_express(usage(OLD, interval), PR)["total"]
            self.assertLess(exp, std)

    def test_total_is_the_sum_of_its_parts(self):
        c = sim.cost_standard(usage(P, 2), PR)
        self.assertAlmostEqual(c["total"], c["step_functions"] + c["lambda"] + c["dynamodb"])


class CeilingTest(unittest.TestCase):
    def test_binding_constraint_is_the_minimum_ceiling(self):
        for q in (sim.US_EAST_1, sim.OTHER_REGION):
            for p, workflow in ((P, "standard"), (OLD, "standard"), (OLD, "express")):
                for interval in sim.INTERVALS:
                    ceils = sim.ceilings(p, q, interval, workflow)
                    name, value = sim.binding(ceils)
                    self.assertEqual(value, min(ceils.values()))
                    self.assertEqual(ceils[name], value)
                    self.assertLessEqual(value, sim.next_binding(ceils)[1])

    def test_express_cannot_run_the_token_loop(self):
        with self.assertRaises(ValueError):
            sim.ceilings(P, sim.US_EAST_1, 1, "express")

    def test_transitions_bind_at_one_second_and_workers_at_two_and_five_in_us_east_1(self):
        # Each running turn holds one worker (984 / 991 / 996 turns); the refill allows
        # 731 / 1,428 / 3,333: below the workers at 1 s only.
        for interval, first, then in (
            (1, "SFN state transitions", "Lambda concurrency"),
            (2, "Lambda concurrency", "SFN state transitions"),
            (5, "Lambda concurrency", "SFN state transitions"),
        ):
            ceils = sim.ceilings(P, sim.US_EAST_1, interval)
            self.assertEqual(sim.binding(ceils)[0], first, interval)
            self.assertEqual(sim.next_binding(ceils)[0], then, interval)
        ceils = sim.ceilings(P, sim.US_EAST_1, 2)
        self.assertLess(ceils["Lambda concurrency"], ceils["SFN state transitions"])

    def test_lambda_concurrency_is_the_quota_over_worker_plus_checker_share(self):
        for interval in sim.INTERVALS:
            per_turn = 1 + (60 / interval) * 0.015 / 60 + 0.05 / 60
            self.assertAlmostEqual(sim.ceilings(P, sim.US_EAST_1, interval)["Lambda concurrency"], 1000 / per_turn)

    def test_state_transition_ceiling(self):
        self.assertAlmostEqual(sim.ceilings(P, sim.US_EAST_1, 1)["SFN state transitions"], 1500 / (123 / 60))
        self.assertAlmostEqual(sim.ceilings(P, sim.US_EAST_1, 2)["SFN state transitions"], 1500 / (63 / 60))

    def test_in_smaller_regions_transitions_still_bind_at_one_and_two_seconds(self):
        for interval in (1, 2):
            self.assertEqual(sim.binding(sim.ceilings(P, sim.OTHER_REGION, interval))[0], "SFN state transitions")
        self.assertEqual(sim.binding(sim.ceilings(P, sim.OTHER_REGION, 5))[0], "Lambda concurrency")

    def test_previous_loop_bound_on_transitions_at_one_and_two_seconds(self):
        for interval, expected in ((1, 1500 / (183 / 60)), (2, 1500 / (93 / 60))):
            name, value = sim.binding(sim.ceilings(OLD, sim.US_EAST_1, interval))
            self.assertEqual(name, "SFN state transitions")
            self.assertAlmostEqual(value, expected)

    def test_token_loop_lifts_the_transition_ceiling_about_one_and_a_half_times(self):
        # 2 transitions a cycle instead of 3: 183/123, 93/63, 39/27.
        for interval in sim.INTERVALS:
            new = sim.ceilings(P, sim.US_EAST_1, interval)["SFN state transitions"]
            old = sim.ceilings(OLD, sim.US_EAST_1, interval)["SFN state transitions"]
            self.assertGreater(new / old, 1.4)
            self.assertLess(new / old, 1.5)

    def test_send_task_success_ceiling_is_refill_times_turn_length(self):
        # One answer per 60 s turn; two when the turn is cancelled.
        self.assertAlmostEqual(sim.ceilings(P, sim.US_EAST_1, 1)["SFN SendTaskSuccess"], 500 * 60)
        self.assertAlmostEqual(sim.ceilings(P, sim.OTHER_REGION, 1)["SFN SendTaskSuccess"], 300 * 60)
        cancelled = replace(P, cancelled_share=1.0)
        self.assertAlmostEqual(sim.ceilings(cancelled, sim.US_EAST_1, 1)["SFN SendTaskSuccess"], 500 * 30)
        self.assertTrue(math.isinf(sim.ceilings(OLD, sim.US_EAST_1, 1)["SFN SendTaskSuccess"]))

    def test_start_execution_ceiling_is_refill_times_turn_length(self):
        self.assertAlmostEqual(sim.ceilings(P, sim.US_EAST_1, 1)["SFN StartExecution"], 300 * 60)
        self.assertAlmostEqual(sim.ceilings(P, sim.OTHER_REGION, 1)["SFN StartExecution"], 150 * 60)

    def test_express_has_no_transition_or_open_execution_ceiling(self):
        ceils = sim.ceilings(OLD, sim.US_EAST_1, 1, "express")
        self.assertTrue(math.isinf(ceils["SFN state transitions"]))
        self.assertTrue(math.isinf(ceils["SFN open executions"]))
        self.assertAlmostEqual(ceils["SFN StartExecution"], 6000 * 60)

    def test_express_lifts_the_binding_ceiling_in_us_east_1_only_at_one_second(self):
        # At 1 s Express trades the transition refill (731) for the workers (984); at 2 and
        # 5 s the workers' concurrency binds both: there Express only saves money.
        standard = sim.binding(sim.ceilings(P, sim.US_EAST_1, 1))
        express = sim.binding(sim.ceilings(OLD, sim.US_EAST_1, 1, "express"))
        self.assertEqual((standard[0], express[0]), ("SFN state transitions", "Lambda concurrency"))
        self.assertGreater(express[1], standard[1])
        for interval in (2, 5):
            standard = sim.binding(sim.ceilings(P, sim.US_EAST_1, interval))
            express = sim.binding(sim.ceilings(OLD, sim.US_EAST_1, interval, "express"))
            self.assertEqual(standard[0], express[0])
            self.assertAlmostEqual(standard[1], express[1])

    def test_raising_concurrency_hands_the_binding_back_to_transitions(self):
        # At 2 s (the template's default) the workers bind; raised, the refill does.
        raised = replace(sim.US_EAST_1, lambda_concurrency=10_000)
        self.assertEqual(sim.binding(sim.ceilings(P, sim.US_EAST_1, 2))[0], "Lambda concurrency")
        self.assertEqual(sim.binding(sim.ceilings(P, raised, 2)), ("SFN state transitions", 1500 / (63 / 60)))
        self.assertEqual(sim.binding(sim.ceilings(P, raised, 1)), ("SFN state transitions", 1500 / (123 / 60)))

    def test_session_writes_are_the_next_dynamodb_limit(self):
        ceils = sim.ceilings(P, sim.US_EAST_1, 1)
        ddb = {k: v for k, v in ceils.items() if k.startswith("DDB")}
        self.assertEqual(sim.binding(ddb)[0], "DDB sessions writes")
        self.assertAlmostEqual(ceils["DDB sessions writes"], 40_000 / (494 / 60))

    def test_every_quota_has_a_lever(self):
        self.assertEqual(set(sim.per_turn_rates(P, 1)), set(sim.LEVERS))


class LeverTest(unittest.TestCase):
    def test_levers_at_one_second(self):
        rows = {label: (sim.binding(ceil), cost) for label, ceil, cost in sim.levers(P, PR, 1)}
        base_bind, base_cost = rows["none: token loop, Standard"]
        self.assertEqual(base_bind[0], "SFN state transitions")
        for label, ((name, value), cost) in rows.items():
            if label.startswith("previous loop"):
                self.assertEqual(name, "SFN state transitions")
                self.assertLess(value, base_bind[1])
                self.assertGreater(cost, base_cost)
            elif "concurrency" in label:
                # The refill binds already: a concurrency raise alone lifts nothing.
                self.assertEqual(name, "SFN state transitions", label)
                self.assertGreaterEqual(value, base_bind[1], label)
                self.assertEqual(cost, base_cost, label)
            elif label.startswith(("Express", "Catch", "adaptive", "batch")):
                # Fewer (or unbilled) transitions hand the binding to the workers.
                self.assertEqual(name, "Lambda concurrency", label)
                self.assertGreater(value, base_bind[1], label)
                self.assertLess(cost, base_cost, label)
            elif label != "none: token loop, Standard":
                # Cheaper, but the transitions still bind at the same ceiling.
                self.assertEqual((name, value), base_bind, label)
                self.assertLess(cost, base_cost, label)


class HotKeyTest(unittest.TestCase):
    def test_one_session_item_is_far_below_the_partition_limits(self):
        h = sim.hot_session(P, sim.US_EAST_1, 1)
        self.assertAlmostEqual(h["wcu_per_s"], 494 / 60)
        self.assertGreater(h["write_headroom"], 100)
        self.assertTrue(math.isinf(h["read_headroom"]))
        old = sim.hot_session(OLD, sim.US_EAST_1, 1)
        self.assertAlmostEqual(old["rcu_per_s"], 1.0)
        self.assertAlmostEqual(old["read_headroom"], 3000)

    def test_rate_limit_counters_at_their_limits_are_far_below_the_partition_limit(self):
        rows = {name: (wru, headroom, attempts) for name, wru, headroom, attempts in sim.rate_limit_counters(sim.US_EAST_1)}
        for name, (wru, headroom, attempts) in rows.items():
            self.assertLessEqual(wru, 5.0, name)
            self.assertGreaterEqual(headroom, 200, name)
            self.assertIn(attempts, (500, 1000), name)
        # The busiest counter: a user reading 300 times a minute, 5 WCU/s on one item.
        self.assertEqual(rows["reads (transcript + list), 300/min"][:2], (5.0, 200.0))


class ReportTest(unittest.TestCase):
    def test_report_is_deterministic_and_markdown_has_tables(self):
        md = sim.report(markdown=True)
        self.assertEqual(md, sim.report(markdown=True))
        self.assertIn("| quota | 1 s | 2 s | 5 s | lever |", md)
        self.assertIn("| SFN state transitions | **731** |", md)

    def test_main_prints(self):
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(sim.main(["--markdown"]), 0)
        self.assertIn("Usage and cost per turn-minute", out.getvalue())


if __name__ == "__main__":
    unittest.main()
