from pixelmesh.pricing.v1 import pricing_service_pb2_grpc
from pricing.core import KeyStore, PriceTable
from pricing.servicer import PricingServicer
from pricing.settings import PricingSettings
from svckit.server import GrpcService


async def serve(settings: PricingSettings) -> None:
    service = GrpcService(settings)
    servicer = PricingServicer(
        KeyStore.with_dev_keys(settings.pricing_dev_api_key.get_secret_value()),
        PriceTable.load(settings.pricing_price_table),
    )
    service.add_servicer(
        pricing_service_pb2_grpc.add_PricingServiceServicer_to_server, servicer, "pixelmesh.pricing.v1.PricingService"
    )
    await service.run()
