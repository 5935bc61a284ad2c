from bus import EVENTS_TOPIC, Producer, ensure_topics
from bus.topics import dlq_spec, events_spec
from pixelmesh.pricing.v1 import pricing_service_pb2_grpc
from pricing.db import migrate, open_database
from pricing.keys import KeyStore
from pricing.ledger import Ledger
from pricing.plans import Plans
from pricing.prices import PriceTable, PriceTableError
from pricing.servicer import PricingServicer
from pricing.settings import PricingSettings
from pricing.settle import settlement_consumer
from svckit.periodic import Periodic
from svckit.server import GrpcService


async def serve(settings: PricingSettings) -> None:
    service = GrpcService(settings)
    db = open_database(settings.pricing_database_url)
    try:
        prices = PriceTable.load(settings.pricing_price_table, settings.extra_price_tables)
    except PriceTableError as exc:
        raise SystemExit(f"pricing: invalid price table: {exc}") from None
    plans = Plans.load(settings.pricing_plans)
    keys, ledger = KeyStore(db, plans), Ledger(db, prices, plans)
    servicer = PricingServicer(keys, ledger, prices, settings.pricing_admin_token.get_secret_value())
    service.add_servicer(
        pricing_service_pb2_grpc.add_PricingServiceServicer_to_server, servicer, "pixelmesh.pricing.v1.PricingService"
    )
    producer = Producer(settings.kafka_bootstrap_servers, client_id="pricing")  # dead letters of the settler
    settler = settlement_consumer(ledger, producer, settings.kafka_bootstrap_servers, settings.pricing_ledger_group)
    # Reservations that outlived the TTL belong to generations that never ended (a submit
    # never dispatched, a job lost): give them back.
    ttl_ms = int(settings.pricing_reservation_ttl_seconds * 1000)
    expirer = Periodic("expire reservations", lambda: ledger.expire(ttl_ms), 60.0, done="released expired reservations")

    async def prepare_database() -> None:
        await migrate(db)
        await keys.seed_dev_keys(settings.pricing_dev_api_key.get_secret_value(), settings.pricing_dev_balance_tokens)

    async def create_topics() -> None:
        specs = [events_spec(settings.kafka_partitions), dlq_spec(EVENTS_TOPIC)]
        await ensure_topics(settings.kafka_bootstrap_servers, specs, settings.kafka_replication_factor)

    async def stop() -> None:
        await expirer.stop()
        await settler.stop()
        await producer.stop()
        await db.close()

    service.on_start(prepare_database)
    service.on_start(create_topics)
    service.on_start(producer.start)
    service.on_start(settler.start)
    service.on_start(expirer.start)
    service.on_stop(stop)
    service.readiness_check(db.answers)
    service.readiness_check(producer.is_connected)
    await service.run()
