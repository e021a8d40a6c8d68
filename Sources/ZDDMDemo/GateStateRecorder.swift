import Logging
import Synchronization
import ZDDM

/// The distinct states a gate was in, in order (`rate/killswitch/stage`), for the worker's summary.
final class GateStateLog: Sendable {
    private let states = Mutex<[String]>([])

    /// Records the gate's current state unless it is the last one recorded.
    func record(_ gate: TrafficGate) {
        let state = "\(gate.rate)/\(gate.isKillswitchOn ? "killswitch" : "on")/\(gate.stage)"
        states.withLock { if $0.last != state { $0.append(state) } }
    }

    /// The states recorded so far.
    var all: [String] { states.withLock { $0 } }
}

/// Writes log messages to standard error and, just before each one, records the gate's state.
///
/// The control service logs each change after applying it, so every state the control file put the gate in is
/// recorded before anyone can read the line that announces it, however busy the process is.
struct GateStateRecorder: LogHandler {
    private var base: any LogHandler
    private let gate: TrafficGate
    private let states: GateStateLog

    init(label: String, gate: TrafficGate, states: GateStateLog) {
        self.base = StreamLogHandler.standardError(label: label)
        self.gate = gate
        self.states = states
    }

    func log(event: LogEvent) {
        states.record(gate)
        base.log(event: event)
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { base.metadataProvider }
        set { base.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { base[metadataKey: key] }
        set { base[metadataKey: key] = newValue }
    }

    var metadata: Logger.Metadata {
        get { base.metadata }
        set { base.metadata = newValue }
    }

    var logLevel: Logger.Level {
        get { base.logLevel }
        set { base.logLevel = newValue }
    }
}
