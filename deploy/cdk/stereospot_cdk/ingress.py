"""Public entry to the Dagster UI: an ALB that lets nobody through without a Cognito login."""

from __future__ import annotations

from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_elasticloadbalancingv2_actions as elb_actions
from constructs import Construct

from stereospot_cdk.network import Network
from stereospot_cdk.services import WEBSERVER_PORT


class AuthenticatedIngress(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        network: Network,
        webserver: ecs.FargateService,
        certificate_arn: str,
        domain_name: str,
        cognito_domain_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        # Operators are invited by an administrator; the Dagster UI can launch and delete runs.
        self.user_pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            password_policy=cognito.PasswordPolicy(min_length=12),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
        )
        domain = self.user_pool.add_domain(
            "Domain",
            cognito_domain=cognito.CognitoDomainOptions(domain_prefix=cognito_domain_prefix),
        )
        client = self.user_pool.add_client(
            "Alb",
            # The ALB exchanges the authorisation code server-side, which needs a client secret.
            generate_secret=True,
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL],
                callback_urls=[f"https://{domain_name}/oauth2/idpresponse"],
            ),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
        )

        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=network.vpc,
            internet_facing=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            drop_invalid_header_fields=True,
        )
        target_group = elbv2.ApplicationTargetGroup(
            self,
            "Webserver",
            vpc=network.vpc,
            port=WEBSERVER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            targets=[webserver],
            health_check=elbv2.HealthCheck(path="/server_info"),
        )
        self.load_balancer.add_listener(
            "Https",
            port=443,
            certificates=[
                elbv2.ListenerCertificate.from_certificate_manager(
                    acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn)
                )
            ],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            default_action=elb_actions.AuthenticateCognitoAction(
                user_pool=self.user_pool,
                user_pool_client=client,
                user_pool_domain=domain,
                next=elbv2.ListenerAction.forward([target_group]),
            ),
        )
        self.load_balancer.add_redirect(source_port=80, target_port=443)
