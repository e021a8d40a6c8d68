/*
 * ZDDM's fleet protocol for one key, checked exhaustively with spin (bash Models/check).
 *
 * Follows Sources/ZDDM/Fleet/FleetMember.swift, FleetState.swift, ChangeApplier.swift and
 * Proxy/MigrationProxy+Versioned.swift.
 *
 * Modelled
 *   Old       the source of truth. Every write or delete gets a new version from Old (a delete keeps its version as
 *             a tombstone) and, in the same transaction, an entry in the change table. Values are the versions
 *             themselves (each change's own), so a record is a version.
 *   New       every write into it is "if newer than what New holds" (the fence), in one step; tombstones carry
 *             versions. New starts with the key copied (version 1) or without it.
 *   Fleet     the shared state: the killswitch, `behind`, `caughtUp`. Turning the killswitch on (writesNew goes
 *             false) moves `behind` on. An operator turns it on and later off again, at any moments.
 *   Instances two, each with a view of the shared state (FleetMember.refresh, at any moment), current for L ticks
 *             from its read. Each instance makes one write or delete (MigrationProxy.performVersioned):
 *               - planned under its view (the view's deadline first, then the gate, which follows the view);
 *               - Old's step; then, if the view has the killswitch off, New's step through the fence, which may
 *                 fail: then fallBehind (markBehind, i.e. behind++, then wait E ticks so that every view read
 *                 before the mark has expired) and only then the acknowledgement;
 *               - if the view has the killswitch on (held back): waitOutWritingViews (wait until E ticks after
 *                 notWritingSince, the moment this instance's views began to show the killswitch; kept even if a
 *                 later view shows it off again), then the acknowledgement if the view it planned under is still
 *                 current, else fallBehind first.
 *             Reads (readThroughVersioned) in either instance: New only while mayReadNew (a current view, with the
 *             killswitch off and caughtUp >= behind), else Old; a miss in New reads Old and fills New through the
 *             fence (the fill may fail).
 *   Applier   one ChangeApplier, rate 1 (so it reads the state once per pass): readState (behind, writesNew; its
 *             settledSince is when it first saw the current writesNew value, and it may publish only if this read
 *             began at least E after that); paused while writesNew is false; then it drains: reads up to BATCH
 *             entries, reads Old's current record, writes it into New through the fence and removes the entries
 *             (or New fails: the pass ends, the entries stay), until a read returns fewer than BATCH (or none);
 *             then publishCaughtUp(the behind it read) when it may. The change table is an unordered set consumed
 *             by deletion, so with one key it is a count of entries.
 *   Time      one clock (the shared store's), in ticks, unbounded: every timestamp is kept as an age capped at
 *             CAP, and a tick ages them all. L = E = 3: the expiry wait is exactly one lease, no clock allowance.
 *
 * Abstracted away
 *   Other keys, the gate's rate and high-water rate (always 1: the key is admitted), stages other than the
 *   killswitch, the circuit breaker and call budgets (their effect is a New step that did not happen, which is
 *   modelled), markBehind failing (the barrier timeout), the applier's lease (one applier, always the holder; a
 *   stale holder's publish is refused by its token), backfill, crashes. Steps are atomic where only local work
 *   or reads of other variables separate them in the code: a read of New and its check of mayReadNew; a miss's
 *   reads of New and Old; the applier's read of the table and of Old's record; a pass's last step and its
 *   publish; the end of a wait and the check that follows it. The two writes may each be a delete.
 *
 * Checked (assertions)
 *   G4  no stale read: a read of New in either instance, while that instance may read New, never returns a version
 *       older than one acknowledged before it began (a read served by Old cannot: acknowledged writes are in Old).
 *   G3  once traffic has stopped and the applier has drained the change table, New holds Old's record.
 *
 * Switches (spin -D...): FENCE=0 plain overwrites in New; BARRIER=0 a failed New step is acknowledged without
 * markBehind and its wait; KILLSWITCH_WAIT=0 a held-back write skips waitOutWritingViews; TOMBSTONES=0 a delete
 * removes New's row; FLIP_COUNT=0 the applier's settledSince follows only the writesNew value it last read (the
 * earlier implementation, which fails G4 when the killswitch goes on and off between two of its reads). The default
 * FLIP_COUNT=1 counts writesNew changes, as the implementation's FleetState.controlEpoch does; the applier restarts
 * its wait when the count moves, not when a failed New step moves `behind`.
 */

#ifndef FENCE
#define FENCE 1
#endif
#ifndef BARRIER
#define BARRIER 1
#endif
#ifndef KILLSWITCH_WAIT
#define KILLSWITCH_WAIT 1
#endif
#ifndef TOMBSTONES
#define TOMBSTONES 1
#endif
#ifndef FLIP_COUNT
#define FLIP_COUNT 1
#endif

#ifndef L
#define L     3        /* the view lease, in ticks */
#endif
#define E     L        /* the expiry wait (FleetOptions.expiryWait): one lease; one clock, so no allowance */
#define CAP   E        /* ages stop counting here: "at least this long ago" */
#define BATCH 2        /* the applier's batch size */
#define NW    2        /* writes: one per instance */

/* Time: every timestamp is an age in ticks, capped at CAP. */
inline older(a) { if :: a < CAP -> a++ :: else -> skip fi }

/* Old */
byte oldVer = 1;                   /* its current record's version (1: written before the migration) */
bool isDel[NW + 2];                /* isDel[v]: version v is a delete's tombstone */
byte pending = 0;                  /* entries in the change table */

/* New */
bool newHas;
byte newVer;

/* The fleet's shared state */
bool ks = false;
byte behind = 0;
byte caughtUp = 0;
#if FLIP_COUNT
byte flips = 0;                    /* how often writesNew changed */
#endif

/* Each instance's view, as its FleetMember keeps it */
byte vAge[2];                      /* age of the view's read: current while vAge < L (CAP where it cannot matter) */
bool vKs[2];                       /* the killswitch in the view */
bool vCaught[2];                   /* caughtUp >= behind in the view (false once it has expired) */
byte nwsAge[2];                    /* age of notWritingSince */
byte wStage[2];                    /* writer i: 0 before its plan, 1 planned, 2 past Old's step */

/* Writer i's timers */
byte pAge[2];                      /* age of the view it planned under: its view deadline has passed at L */
byte wAge[2];                      /* age of the moment it waits from: notWritingSince, or its markBehind */

byte sAge;                         /* age of the applier's settledSince */

byte acked = 1;                    /* the largest version acknowledged */
byte writersDone = 0;
bool quiet = false;                /* every write has been acknowledged: traffic has stopped */
bool over = false;                 /* G3 has been checked: nothing changes any more */

#if KILLSWITCH_WAIT
#define KSWAIT (wAge[i] >= E)
#else
#define KSWAIT true
#endif

#define mayReadNew(i) (vAge[i] < L && vCaught[i] && !vKs[i])

#if TOMBSTONES
#define G3 (newHas && newVer == oldVer || oldVer == 1 && !newHas)
#else
#define G3 (newHas && newVer == oldVer && !isDel[oldVer] || !newHas && (isDel[oldVer] || oldVer == 1))
#endif

/* The fill in flight, if any: a read that missed in New has read Old's record and will write it into New. With
   the fence and tombstones, a fill whose version New already holds (or newer) can never change New, so it is
   dropped as soon as that is so (this merges states and changes no outcome). */
byte fillVer = 0;                  /* 0: none */

inline dropFills() {
#if FENCE && TOMBSTONES
    if :: fillVer != 0 && newHas && newVer >= fillVer -> fillVer = 0 :: else -> skip fi
#else
    skip
#endif
}

/* A write of the record at version v into New, in one step. */
inline writeNew(v) {
#if FENCE
    if
    :: !newHas || v > newVer ->                       /* only if newer than what New holds */
#if TOMBSTONES
        newHas = true; newVer = v
#else
        if
        :: isDel[v] -> newHas = false; newVer = 0     /* a delete removes the row */
        :: else -> newHas = true; newVer = v
        fi
#endif
    :: else -> skip
    fi;
#else
    newHas = true; newVer = v;
#endif
    dropFills()
}

inline ack(v) {
    if :: acked < v -> acked = v :: else -> skip fi;
    writersDone++; v = 0
}

proctype Clock() {
end:
    do
    :: atomic { !over ->
        older(vAge[0]); older(vAge[1]);
        if :: vAge[0] >= L -> vCaught[0] = false :: else -> skip fi;
        if :: vAge[1] >= L -> vCaught[1] = false :: else -> skip fi;
        older(nwsAge[0]); older(nwsAge[1]);
        older(pAge[0]); older(pAge[1]); older(wAge[0]); older(wAge[1]); older(sAge)
       }
    od
}

/* G4, in every state: a read of New in either instance returns New's version (a miss goes to Old). */
proctype Reads() {
end:
    do
    :: assert(!((mayReadNew(0) || mayReadNew(1)) && newHas) || newVer >= acked)
    od
}

/* A read in either instance that may read New and finds nothing there: Old's record, then a fill. */
proctype Filler() {
end:
    do
    :: atomic { !over && (mayReadNew(0) || mayReadNew(1)) && !newHas && fillVer == 0 -> fillVer = oldVer }
    :: atomic { fillVer != 0 -> writeNew(fillVer); fillVer = 0 }
    :: atomic { fillVer != 0 -> fillVer = 0 }         /* the fill failed */
    od
}

/* FleetMember.refresh / apply: the view is current for one lease from its read. */
proctype Refresher(byte i) {
end:
    do
    :: atomic { !over ->
        if
        :: ks && !vKs[i] && wStage[i] < 2 -> nwsAge[i] = 0   /* New stops being written in this instance's views */
        :: else -> skip
        fi;
        vKs[i] = ks; vCaught[i] = (!ks && caughtUp >= behind);
        vAge[i] = (vCaught[i] || ks && wStage[i] == 0 -> 0 : CAP)   /* the age matters only for these */
       }
    od
}

/* An operator turns the killswitch on (writesNew true -> false: behind moves on), later off again. */
proctype Operator() {
end:
    atomic { !over ->
        ks = true; behind++;
#if FLIP_COUNT
        flips++
#endif
    };
end2:
    atomic { !over ->
        ks = false;
#if FLIP_COUNT
        flips++
#endif
    }
}

/* MigrationProxy.mutateVersioned / performVersioned in instance i: one write, or one delete. */
proctype Writer(byte i) {
    byte my;
    bool hold;
    /* The plan: the view's deadline, then the gate's snapshot, which follows the view. */
    atomic { hold = vKs[i]; if :: hold -> pAge[i] = vAge[i]; vAge[i] = CAP :: else -> skip fi; wStage[i] = 1 }
    /* Old's transaction: the change, its version, its change-table entry. */
    atomic {
        oldVer++; my = oldVer;
        if :: isDel[my] = true :: skip fi;            /* a delete (a tombstone at its version), or a write */
        pending++;
        if :: hold -> wAge[i] = nwsAge[i] :: else -> skip fi;   /* waitOutWritingViews reads notWritingSince */
        nwsAge[i] = CAP; wStage[i] = 2
    }
    if
    :: atomic { !hold -> writeNew(my); ack(my) }      /* New's step: stored, or refused as older */
    :: atomic { !hold ->                              /* New's step failed (or timed out, or the breaker held it) */
#if BARRIER
            behind++; wAge[i] = 0 };                  /* fallBehind: markBehind, */
        atomic { wAge[i] >= E -> ack(my); wAge[i] = CAP }   /* then every view read before it has expired */
#else
            ack(my) }
#endif
    /* Held back: waitOutWritingViews; then the acknowledgement under the view it planned with, or fallBehind. */
    :: atomic { hold && KSWAIT && pAge[i] < L -> ack(my); pAge[i] = CAP; wAge[i] = CAP }
    :: atomic { hold && KSWAIT && pAge[i] >= L -> behind++; wAge[i] = 0; pAge[i] = CAP };
        atomic { wAge[i] >= E -> ack(my); wAge[i] = CAP }
    fi
}

/* ChangeApplier.pass: a loop over phases, each step one atomic action. */
#define READ_STATE 0
#define READ_TABLE 1
#define APPLY      2

/* The pass is complete: publishCaughtUp (caughtUp never goes down); G3 if traffic had stopped before the last
   read of the change table. */
inline complete() {
    if
    :: mayPub && caughtUp < sBehind -> caughtUp = sBehind
    :: else -> skip
    fi;
    sBehind = 0; mayPub = false; n = 0;
    if
    :: last -> assert(G3); over = true; break
    :: else -> phase = READ_STATE
    fi
}

proctype Applier() {
    byte phase = READ_STATE, sBehind, n, cv;
    bool mayPub, last;
#if FLIP_COUNT
    byte settledFlips;
#else
    bool settledWrites = true;
#endif
end:
    do
    :: atomic { phase == READ_STATE ->                /* readState */
#if FLIP_COUNT
        if
        :: settledFlips != flips -> settledFlips = flips; sAge = 0
        :: else -> skip
        fi;
#else
        if
        :: settledWrites != !ks -> settledWrites = !ks; sAge = 0
        :: else -> skip
        fi;
#endif
        if
        :: ks -> skip                                 /* paused while New is not written */
        :: else -> sBehind = behind; mayPub = (sAge >= E); phase = READ_TABLE
        fi
       }
    :: atomic { phase == READ_TABLE ->                /* a read of up to BATCH entries */
        n = (pending < BATCH -> pending : BATCH); last = quiet;
        if
        :: n == 0 -> complete()
        :: else -> cv = oldVer; phase = APPLY         /* and Old's current record */
        fi
       }
    :: atomic { phase == APPLY ->                     /* into New through the fence; the entries removed */
        writeNew(cv); pending = pending - n; cv = 0;
        if
        :: n < BATCH -> complete()                    /* fewer than BATCH: every entry there was is applied */
        :: else -> n = 0; phase = READ_TABLE
        fi
       }
    :: atomic { phase == APPLY ->                     /* New failed: the pass ends, the entries stay */
        cv = 0; n = 0; sBehind = 0; mayPub = false; last = false; phase = READ_STATE
       }
    od
}

init {
    if
    :: newHas = true; newVer = 1                      /* the key was copied to New */
    :: newHas = false                                 /* or not yet */
    fi;
    vCaught[0] = true; vCaught[1] = true;             /* each instance's first view, just read */
    nwsAge[0] = CAP; nwsAge[1] = CAP; pAge[0] = CAP; pAge[1] = CAP; wAge[0] = CAP; wAge[1] = CAP;
    sAge = CAP;                                       /* the applier has seen writesNew for long */
    atomic {
        run Clock(); run Operator(); run Applier(); run Reads(); run Filler();
        run Refresher(0); run Refresher(1); run Writer(0); run Writer(1)
    }
end:
    atomic { writersDone == NW -> quiet = true }
}
