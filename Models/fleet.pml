/* header written later */
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
#ifndef FLIPS
#define FLIPS 0
#endif

#define L     2        /* the view lease, in ticks */
#define E     L        /* the expiry wait: one lease (one clock, so no allowance) */
#define MAXT  5        /* the time horizon, in ticks */
#define BATCH 2        /* the applier's batch size */
#define NW    2        /* writes: one per instance */

byte now = 0;                      /* the store's clock */

/* Old: the source of truth. A record is its version (unique per change) and whether it is a tombstone. */
byte oldVer = 1;
bool oldDel = false;
byte pending = 0;                  /* entries in Old's change table (one key: entries are alike) */

/* New */
bool newHas;
byte newVer;
bool newDel;

/* The fleet's shared state (stage on, rate 1: the key is admitted; only the killswitch moves). */
bool ks = false;
byte behind = 0;
byte caughtUp = 0;
byte flips = 0;                    /* FLIPS: a count of writesNew changes (not in the implementation) */

/* Each instance's view of the shared state. */
byte vStart[2];                    /* when the view's read began: current while now < vStart + L */
bool vKs[2];
byte vBehind[2];
byte vCaught[2];
bool writing[2];
byte notWritingSince[2];

byte acked = 1;                    /* the largest version acknowledged (1: written before the migration) */
byte writersDone = 0;
byte readersDone = 0;
bool quiet = false;                /* traffic has stopped */
bool wrote = false;                /* some write or delete happened */

#define mayReadNew(i) (now < vStart[i] + L && vCaught[i] >= vBehind[i] && !vKs[i])

/* A write of record (v, d) into New. */
inline writeNew(v, d) {
    atomic {
#if FENCE
        if
        :: !newHas || v > newVer ->
#if TOMBSTONES
            newHas = true; newVer = v; newDel = d
#else
            if :: d -> newHas = false; newVer = 0; newDel = false :: else -> newHas = true; newVer = v; newDel = false fi
#endif
        :: else -> skip
        fi
#else
        newHas = true; newVer = v; newDel = d
#endif
    }
}

inline ack(v) {
    if :: acked < v -> acked = v :: else -> skip fi;
    writersDone++
}

proctype Clock() {
end:
    do
    :: now < MAXT -> now++
    od
}

proctype Refresher(byte i) {
    do
    :: atomic {
        vStart[i] = now; vKs[i] = ks; vBehind[i] = behind; vCaught[i] = caughtUp;
        if
        :: ks && writing[i] -> notWritingSince[i] = now; writing[i] = false
        :: ks && !writing[i] -> skip
        :: !ks -> writing[i] = true
        fi
       }
    :: quiet -> break
    od
}

proctype Operator() {
    if
    :: skip
    :: atomic { ks = true; behind++; flips++ };    /* writesNew true -> false: behind moves on */
       atomic { ks = false; flips++ }
    fi
}

proctype Writer(byte i) {
    byte my, deadline, mark, since;
    bool hold, del;
    /* The plan: the view's deadline, then the gate's snapshot (which follows the view). */
    atomic { deadline = vStart[i] + L; hold = vKs[i] }
    /* Old's transaction: the change (a write or a delete, a tombstone), its version, its change-table entry. */
    atomic {
        oldVer++; my = oldVer;
        if :: oldDel = true :: oldDel = false fi;
        del = oldDel; pending++; wrote = true
    }
    if
    :: !hold ->
        if
        :: writeNew(my, del)                          /* stored (or refused: New holds newer) */
        :: true ->                                    /* New's step failed, timed out, or the breaker held it */
#if BARRIER
            atomic { behind++; mark = now };          /* markBehind */
end_b:      atomic { now >= mark + E -> ack(my) }     /* every view read before the mark has expired */
            goto done
#else
            skip
#endif
        fi;
        atomic { ack(my) }
    :: hold ->                                        /* New is not written in this view: held back */
#if KILLSWITCH_WAIT
        atomic { since = (writing[i] -> now : notWritingSince[i]) };
end_k:  (now >= since + E);                           /* every view from before New stopped being written expired */
#endif
        if
        :: atomic { now < deadline -> ack(my) }       /* acknowledged under the view it was planned under */
        :: atomic { now >= deadline -> behind++; mark = now };
end_h:      atomic { now >= mark + E -> ack(my) }
        fi
    fi;
done:
    skip
}

proctype Reader(byte i) {
    byte floor, got;
    bool d, hit;
    do
    :: atomic { !mayReadNew(i) -> got = oldVer; assert(got >= acked); got = 0 }   /* Old */
    :: atomic { mayReadNew(i) -> floor = acked }                                   /* New */
        atomic {
            if
            :: newHas -> got = newVer; hit = true
            :: else -> hit = false
            fi
        }
        if
        :: !hit ->                                    /* a miss: Old, then a fill through the fence */
            atomic { got = oldVer; d = oldDel }
            if
            :: writeNew(got, d)
            :: skip                                   /* the fill failed */
            fi
        :: else -> skip
        fi;
        atomic { assert(got >= floor); floor = 0; got = 0; d = false; hit = false }   /* G4 */
    :: break
    od;
    readersDone++
}

proctype Applier() {
    byte sBehind, sCaught, settledSince, n, cv;
    bool sWrites, mayPub, known, settledWrites, cd, last;
#if FLIPS
    byte sFlips, settledFlips;
#endif
pass:
    atomic {
        sBehind = behind; sCaught = caughtUp; sWrites = !ks;
#if FLIPS
        sFlips = flips;
        if
        :: !known || settledFlips != sFlips -> known = true; settledFlips = sFlips; settledSince = now
        :: else -> skip
        fi;
#else
        if
        :: !known || settledWrites != sWrites -> known = true; settledWrites = sWrites; settledSince = now
        :: else -> skip
        fi;
#endif
        mayPub = (now >= settledSince + E)
    }
    if
    :: !sWrites -> goto pass                          /* paused while New is not written */
    :: else -> skip
    fi;
drain:
    atomic { n = (pending < BATCH -> pending : BATCH); last = quiet }
    if
    :: n == 0 -> goto complete
    :: else -> skip
    fi;
    atomic { cv = oldVer; cd = oldDel }               /* Old's current record */
    if
    :: writeNew(cv, cd); atomic { cv = 0; cd = false }
    :: atomic { cv = 0; cd = false; n = 0 }; goto pass   /* New failed: the pass ends, the entries stay */
    fi;
    atomic { pending = pending - n };
    if
    :: n < BATCH -> n = 0; goto complete
    :: else -> n = 0; goto drain
    fi;
complete:
    atomic {
        if
        :: sCaught < sBehind && mayPub -> if :: caughtUp < sBehind -> caughtUp = sBehind :: else -> skip fi
        :: else -> skip
        fi
    }
    if
    :: last ->                                        /* traffic had stopped and the change table is drained */
        assert(newHas && newVer == oldVer && newDel == oldDel || !wrote && !newHas);   /* G3 */
        goto finished
    :: else -> goto pass
    fi;
finished:
    skip
}

init {
    if
    :: newHas = true; newVer = 1          /* the key was copied to New */
    :: newHas = false                     /* or not yet */
    fi;
    writing[0] = true; writing[1] = true;
    atomic {
        run Clock(); run Operator(); run Applier();
        run Refresher(0); run Refresher(1);
        run Writer(0); run Writer(1); run Reader(0); run Reader(1)
    }
end:
    atomic { writersDone == NW && readersDone == 2 -> quiet = true }
}
