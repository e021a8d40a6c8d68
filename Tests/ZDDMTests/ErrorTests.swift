import Testing
import ZDDM
import ZDDMTesting

@Suite("Errors")
struct ErrorTests {
    struct Leaky: Error, CustomStringConvertible {
        var description: String { "INSERT failed for value 'secret-42'" }
    }

    @Test("An underlying error is described by its type unless it promises a value-free description")
    func noValuesInDescriptions() {
        let wrapped = ZDDMError(.storeFailed, role: .new, operation: .write, message: "", underlying: Leaky())
        #expect(!wrapped.description.contains("secret-42"))
        #expect(wrapped.description.contains("Leaky"))
        #expect(wrapped.description.contains("New store, write"))
        let safe = ZDDMError(
            .storeFailed,
            role: .old,
            operation: .read,
            message: "",
            underlying: InjectedFault(operation: .read, applied: false)
        )
        #expect(safe.description.contains("injected fault on read"))
        #expect(
            ZDDMError(.storeFailed, message: "", underlying: CancellationError()).description.contains("cancelled")
        )
    }

    @Test("A store's error keeps the store and operation it was first given")
    func wrapping() async throws {
        let old = FaultInjectingStore(InMemoryStore<String, String>())
        old.setOutage(true)
        let proxy = try MigrationProxy(name: "e", old: old, new: InMemoryStore(), gate: TrafficGate(rate: 1))
        let error = await #expect(throws: ZDDMError.self) { try await proxy.read("k") }
        #expect(error?.code == .storeFailed)
        #expect(
            error?.description
                == "ZDDM store failed: Old store, read (injected fault on read (before the store applied it))"
        )
    }
}
