/*
 * ZDDM fleet protocol, one key, checked exhaustively with spin.
 *
 * Old assigns a version to every change inside the change's own transaction (a trigger) and appends it to a change
 * log read in commit order. Two proxy instances write the key (Old first, then New); a New step may fail or be
 * skipped (killswitch, breaker). A reader in a third instance reads New or Old and fills New on a miss. A change
 * applier applies the log to New. Values are the versions themselves (every write is unique).
 *
 *   FENCE    1: every write into New is "if newer than what New holds", in one step; 0: plain overwrite.
 *   BARRIER  1: an instance whose New step failed records the fleet-wide "New is behind up to version v" before it
 *              acknowledges; readers use New only once the applier has applied past it. 0: no barrier.
 *
 * Checked: G3 (with New healthy or not, once the applier has drained the log New equals Old) and G4 (a read that
 * starts after a write was acknowledged never returns an older version).
 *
 *   spin -a fleet.pml && gcc -O2 -o pan pan.c && ./pan          # the protocol: no error
 *   spin -DFENCE=0 -a fleet.pml && ...                          # without the fence: G3 fails
 *   spin -DBARRIER=0 -a fleet.pml && ...                        # without the barrier: G4 fails
 */
#ifndef FENCE
#define FENCE 1
#endif
#ifndef BARRIER
#define BARRIER 1
#endif

byte oldVer = 1;      /* Old holds version 1 from before the migration */
byte newVer = 1;      /* New was filled with it */
bool newHas = true;
chan changes = [4] of { byte };
byte applied = 1;     /* the applier's durable position: every change up to it is in New */
byte behind = 0;      /* the fleet's barrier: New may be behind up to this version */
byte acked = 1;       /* the largest version acknowledged to a caller */
byte writersDone = 0;

inline writeNew(v) {
#if FENCE
    atomic { if :: v > newVer -> newVer = v; newHas = true :: else -> skip fi }
#else
    atomic { newVer = v; newHas = true }
#endif
}

proctype Writer() {
    byte my;
    atomic { oldVer++; my = oldVer; changes!my }   /* Old's transaction: the change, its version, its log entry */
    if
    :: writeNew(my)
    :: true ->                                      /* New's step failed, timed out, or was skipped */
#if BARRIER
        atomic { if :: behind < my -> behind = my :: else -> skip fi }
#else
        skip
#endif
    fi;
    atomic { if :: acked < my -> acked = my :: else -> skip fi; writersDone++ }   /* acknowledged */
}

proctype Reader() {
    byte floor, got, fill;
    floor = acked;                                  /* the read starts */
    if
    :: atomic { applied >= behind } ->              /* New is not behind for what is acknowledged */
        if
        :: atomic { newHas -> got = newVer }
        :: atomic { !newHas -> got = oldVer }       /* a miss: Old, then fill New */
            fill = got;
            writeNew(fill)
        fi
    :: atomic { applied < behind -> got = oldVer }
    fi;
    assert(got >= floor)                            /* G4 */
}

proctype Applier() {
    byte entry, current;
    do
    :: changes?entry ->
        current = oldVer;                           /* the key's state in Old now (it may be newer than entry) */
        writeNew(current);
        applied = entry
    :: atomic { writersDone == 2 && empty(changes) } -> break
    od
}

init {
    atomic { run Writer(); run Writer(); run Reader(); run Reader(); run Applier() }
    (_nr_pr == 1);
    assert(newHas && newVer == oldVer)              /* G3, after the applier drained the log */
}
