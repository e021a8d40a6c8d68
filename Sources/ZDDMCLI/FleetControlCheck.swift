import ZDDM

/// The checks `zddm control set` makes before changing a fleet's shared state.
///
/// Instances follow the shared state without checking it (whoever changed it is trusted to have done so), so the
/// command checks what a ``TrafficGate`` checks on its own stage changes, as far as the shared state tells:
/// `complete` only from `rampdown`, `rampdown` only from `live`, at rate 1, with the killswitch off, with the change
/// applier caught up and an operator's word that a verify pass was clean; rate 1 throughout `rampdown` and
/// `complete`; nothing out of `complete`.
enum FleetControlCheck {
    /// Checks a change against the current state.
    /// - Parameters:
    ///   - change: The operator's change.
    ///   - current: The migration's state just before.
    ///   - verified: Whether the operator says a verify pass was clean since New last fell behind.
    /// - Returns: The state after the change.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/refusedTransition`` saying what is refused and why.
    static func check(
        _ change: FleetControlChange,
        from current: FleetState,
        verified: Bool
    ) throws -> FleetState {
        let next = try current.applying(change)
        func refused(_ reason: String) -> ZDDMError {
            ZDDMError(.refusedTransition, message: "stage \(current.stage) → \(next.stage) refused: \(reason)")
        }
        if current.stage != next.stage {
            switch (current.stage, next.stage) {
            case (.complete, _):
                throw refused("Old is no longer written; going back needs a migration the other way")
            case (_, .complete) where current.stage != .rampdown:
                throw refused("go through rampdown first")
            case (_, .rampdown) where current.stage != .live:
                throw refused("only live can move to rampdown")
            case (.live, .rampdown):
                guard next.rate == 1, !next.killswitch else {
                    throw refused("rampdown needs rate 1 and the killswitch off")
                }
                guard current.isCaughtUp else {
                    throw refused(
                        "the change applier has not caught up (behind \(current.behind), caught up "
                            + "\(current.caughtUp))"
                    )
                }
                guard verified else {
                    throw refused("run zddm verify, and pass --verified once a pass is clean")
                }
            default:
                break
            }
        }
        if next.stage == .rampdown || next.stage == .complete, next.rate != 1 {
            throw ZDDMError(.refusedTransition, message: "--rate must stay 1 in stage \(next.stage)")
        }
        return next
    }
}
